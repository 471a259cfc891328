/* Small helpers for the portal: copy buttons, expiry countdowns and the live session view. No dependencies. */
(function () {
  "use strict";

  function copyText(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) return;
    var text = target.textContent;
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(target); });
    } else {
      selectText(target);
      try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected */ }
    }
  }

  function selectText(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function formatLeft(seconds) {
    if (seconds <= 0) return "expired";
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return (h ? h + ":" + pad(m) : m) + ":" + pad(s);
  }

  function startCountdowns() {
    var nodes = document.querySelectorAll("[data-expires]");
    if (!nodes.length) return;
    var tick = function () {
      nodes.forEach(function (node) {
        if (node.classList.contains("stopped")) return;
        var left = Math.round((Date.parse(node.getAttribute("data-expires")) - Date.now()) / 1000);
        node.textContent = formatLeft(left);
        node.classList.toggle("ended", left <= 0);
      });
    };
    tick();
    setInterval(tick, 1000);
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
  }

  function commandRow(command) {
    var row = document.createElement("tr");
    row.setAttribute("data-command-id", command.id);
    var classes = [];
    if (command.chatter) classes.push("chatter");
    if (command.refused) classes.push("refused");
    else if (!command.ok) classes.push("failed");
    row.className = classes.join(" ");
    var at = command.at ? new Date(command.at) : null;
    cell(row, at ? at.toISOString().substring(11, 19) : "");
    cell(row, command.command);
    cell(row, [command.database, command.collection].filter(Boolean).join("."));
    // The same words as the page rendered by the server (session_detail.html): a refusal says why.
    var outcome = command.refused ? "refused: " + (command.error_message || "by the session's policy")
      : command.ok ? "ok" : "error " + (command.error_code || "") + (command.error_message ? ": " + command.error_message : "");
    cell(row, outcome, command.refused || !command.ok ? "reason" : "");
    cell(row, command.n == null ? "" : command.n);
    cell(row, command.latency_us == null ? "" : (command.latency_us / 1000).toFixed(1) + " ms");
    cell(row, command.summary && Object.keys(command.summary).length ? JSON.stringify(command.summary) : "", "summary");
    return row;
  }

  function showEnded(root, reason) {
    root.setAttribute("data-state", "ended");
    var status = document.getElementById("live-status");
    if (status) { status.textContent = "Session ended" + (reason ? " (" + reason.replace(/_/g, " ") + ")" : ""); status.className = "live-status ended"; }
    var banner = document.getElementById("ended-banner");
    if (banner) { banner.hidden = false; banner.textContent = "This session has ended" + (reason ? ": " + reason.replace(/_/g, " ") : "") + ". Its credentials no longer work."; }
    var state = document.getElementById("session-state");
    if (state) { state.textContent = "ended"; state.className = "state state-ended"; }
    document.querySelectorAll(".only-open").forEach(function (node) { node.hidden = true; });
    document.querySelectorAll("[data-expires]").forEach(function (node) { node.classList.add("stopped"); node.textContent = "ended"; });
  }

  function startLiveSession() {
    var root = document.getElementById("live-session");
    if (!root || !window.WebSocket) return;
    var body = document.querySelector("#commands tbody");
    var emptyRow = document.getElementById("no-commands");
    var seen = {};
    body.querySelectorAll("tr[data-command-id]").forEach(function (row) { seen[row.getAttribute("data-command-id")] = true; });
    var status = document.getElementById("live-status");
    var retries = 0;
    var add = function (command) {
      if (seen[command.id]) return;
      seen[command.id] = true;
      if (emptyRow) { emptyRow.remove(); emptyRow = null; }
      body.appendChild(commandRow(command));
      if (command.chatter) {
        var chatter = document.getElementById("chatter-count");
        if (chatter) {
          chatter.textContent = body.querySelectorAll("tr.chatter").length;
          var plural = document.getElementById("chatter-plural");
          if (plural) plural.textContent = chatter.textContent === "1" ? "" : "s";
        }
      }
      var count = document.getElementById("commands-count");
      if (count) count.textContent = Object.keys(seen).length;
    };
    var connect = function () {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var socket = new WebSocket(scheme + location.host + root.getAttribute("data-ws-path"));
      socket.onopen = function () { retries = 0; if (status && root.getAttribute("data-state") !== "ended") { status.textContent = "Live"; status.className = "live-status connected"; } };
      socket.onmessage = function (message) {
        var event = JSON.parse(message.data);
        if (event.type === "snapshot") { (event.commands || []).forEach(add); }
        else if (event.type === "command") { add(event); }
        else if (event.type === "ended") { showEnded(root, event.reason); socket.close(); }
      };
      socket.onclose = function () {
        if (root.getAttribute("data-state") === "ended") return;
        if (status) { status.textContent = "Reconnecting…"; status.className = "live-status"; }
        retries += 1;
        setTimeout(connect, Math.min(10000, 500 * retries));
      };
    };
    if (root.getAttribute("data-state") !== "ended") connect();
  }

  document.addEventListener("change", function (event) {
    if (event.target.id !== "show-chatter") return;
    var table = document.getElementById("commands");
    if (table) table.classList.toggle("hide-chatter", !event.target.checked);
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (button) { event.preventDefault(); copyText(button); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    var replace = document.body.getAttribute("data-replace-url");
    if (replace && window.history && history.replaceState) history.replaceState(null, "", replace);
    startCountdowns();
    startLiveSession();
  });
})();
