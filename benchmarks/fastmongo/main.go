// Command fastmongo is a canned-reply MongoDB wire server for benchmarks/proxy.py: an upstream that
// answers faster than any proxy put in front of it, so that the proxy's own cost shows.
//
// It speaks OP_MSG and OP_QUERY/OP_REPLY, answers hello/isMaster, buildInfo, ping, endSessions and
// SCRAM-SHA-256/SCRAM-SHA-1 logins of one user, and answers with replies prepared at start-up:
//   - find on the -big collection: one document of -big-size bytes; on the -stream collection: the
//     first of -batches batches of one -batch-size document, a cursor the client follows with getMore;
//     on any other collection: one document of -small-size bytes (whatever the filter);
//   - insert: {n: <documents sent>, ok: 1};
//   - any other command: {ok: 1}.
//
// Only the command name and its first value are decoded per request; replies are written with one
// writev (a per-connection header and a shared prepared body). It prints "listening HOST:PORT" once
// it accepts connections. Standard library only.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	opReply          = 1
	opQuery          = 2004
	opMsg            = 2013
	maxMessageSize   = 48_000_000
	maxBSONSize      = 16 * 1024 * 1024
	maxWireVersion   = 17 // MongoDB 6.0: inside every client's range here (pymongo 4.x, Go driver 1.14)
	flagMoreToCome   = 1 << 1
	flagChecksumPres = 1 << 0
)

// reply is a prepared OP_MSG reply: the bytes after the 16-byte header, and where a cursor id sits.
type reply struct {
	body     []byte // flagBits, kind-0 section, document
	cursorAt int    // offset in body of the reply's int64 cursor id, or -1
}

type server struct {
	user        string
	keys        map[string]*scramKeys
	mechanisms  []string
	bigColl     string
	streamColl  string
	batches     int64
	small       reply
	big         reply
	streamFirst reply
	streamMore  reply
	streamLast  reply
	insertOne   reply
	ok          reply
	nextConnID  atomic.Int32
	nextCursor  atomic.Int64
	cursorsMu   sync.Mutex
	cursors     map[int64]int64 // cursor id -> batches already sent
	connections atomic.Int64
}

type conn struct {
	s       *server
	c       net.Conn
	r       *bufio.Reader
	id      int32
	buf     []byte
	head    [16 + 64]byte // a reply's header and, for a getMore, its bytes up to the cursor id
	scram   *scramConversation
	scramID int32
	nextReq int32
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	user := flag.String("user", "bench", "the one user that may log in (authSource admin)")
	password := flag.String("password", "", "that user's password (required)")
	bigColl := flag.String("big", "big", "collection whose find returns the big document")
	streamColl := flag.String("stream", "stream", "collection whose find opens the getMore stream")
	smallSize := flag.Int("small-size", 1024, "bytes of the document every other find returns")
	bigSize := flag.Int("big-size", 1024*1024, "bytes of the big document")
	batchSize := flag.Int("batch-size", 16*1024, "bytes of each stream batch (one document)")
	batches := flag.Int64("batches", 100, "batches of the stream, the find's first batch included")
	flag.Parse()
	if *password == "" {
		log.Fatal("-password is required")
	}
	s := &server{
		user: *user, bigColl: *bigColl, streamColl: *streamColl, batches: *batches,
		keys: map[string]*scramKeys{}, mechanisms: []string{"SCRAM-SHA-1", "SCRAM-SHA-256"},
		cursors: map[int64]int64{},
	}
	for _, mechanism := range s.mechanisms {
		keys, err := newScramKeys(mechanism, *user, *password)
		if err != nil {
			log.Fatal(err)
		}
		s.keys[mechanism] = keys
	}
	s.nextCursor.Store(1 << 40)
	s.prepare(*smallSize, *bigSize, *batchSize)

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", listener.Addr())
	os.Stdout.Sync()
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		<-signals
		listener.Close()
		os.Exit(0)
	}()
	for {
		c, err := listener.Accept()
		if err != nil {
			if strings.Contains(err.Error(), "use of closed") {
				return
			}
			log.Print(err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if tcp, ok := c.(*net.TCPConn); ok {
			_ = tcp.SetNoDelay(true)
		}
		cn := &conn{s: s, c: c, r: bufio.NewReaderSize(c, 32*1024), id: s.nextConnID.Add(1), buf: make([]byte, 4096)}
		go cn.serve()
	}
}

// payloadDoc is a document of about size bytes: {_id: 1, payload: "xxx..."}.
func payloadDoc(size int, fill byte) []byte {
	n := size - 30
	if n < 1 {
		n = 1
	}
	return newDoc().Int32("_id", 1).String("payload", strings.Repeat(string(fill), n)).bytes()
}

func msgBody(document []byte) []byte {
	body := make([]byte, 5, 5+len(document))
	body = append(body, document...)
	return body
}

// cursorReply prepares {cursor: {id, ns, <batch>: [document]}, ok: 1} and finds its cursor id.
func cursorReply(ns, batch string, document []byte, cursorID int64) reply {
	const marker = 0x0123456789ABCDEF
	id := cursorID
	if id != 0 {
		id = marker
	}
	cursor := newDoc().Int64("id", id).String("ns", ns).Array(batch, document).bytes()
	body := msgBody(newDoc().Doc("cursor", cursor).Double("ok", 1).bytes())
	r := reply{body: body, cursorAt: -1}
	if id != 0 {
		for i := 0; i+8 <= len(body); i++ {
			if binary.LittleEndian.Uint64(body[i:]) == marker {
				r.cursorAt = i
				break
			}
		}
	}
	return r
}

func (s *server) prepare(smallSize, bigSize, batchSize int) {
	s.small = cursorReply("bench.small", "firstBatch", payloadDoc(smallSize, 'x'), 0)
	s.big = cursorReply("bench."+s.bigColl, "firstBatch", payloadDoc(bigSize, 'y'), 0)
	batch := payloadDoc(batchSize, 'z')
	s.streamFirst = cursorReply("bench."+s.streamColl, "firstBatch", batch, 1)
	s.streamMore = cursorReply("bench."+s.streamColl, "nextBatch", batch, 1)
	s.streamLast = cursorReply("bench."+s.streamColl, "nextBatch", batch, 0)
	s.insertOne = reply{body: msgBody(newDoc().Int32("n", 1).Double("ok", 1).bytes()), cursorAt: -1}
	s.ok = reply{body: msgBody(newDoc().Double("ok", 1).bytes()), cursorAt: -1}
}

func (c *conn) serve() {
	c.s.connections.Add(1)
	defer c.s.connections.Add(-1)
	defer c.c.Close()
	for {
		if err := c.handle(); err != nil {
			if err != io.EOF && !strings.Contains(err.Error(), "connection reset") {
				log.Printf("connection %d: %v", c.id, err)
			}
			return
		}
	}
}

func (c *conn) handle() error {
	head, err := c.r.Peek(16)
	if err != nil {
		return err
	}
	size := int(int32(binary.LittleEndian.Uint32(head)))
	if size < 21 || size > maxMessageSize {
		return fmt.Errorf("bad message size %d", size)
	}
	if cap(c.buf) < size {
		c.buf = make([]byte, size)
	}
	message := c.buf[:size]
	if _, err := io.ReadFull(c.r, message); err != nil {
		return err
	}
	requestID := int32(binary.LittleEndian.Uint32(message[4:]))
	switch opCode := binary.LittleEndian.Uint32(message[12:]); opCode {
	case opMsg:
		return c.handleMsg(requestID, message)
	case opQuery:
		return c.handleQuery(requestID, message)
	default:
		return fmt.Errorf("unsupported opCode %d", opCode)
	}
}

func (c *conn) handleMsg(requestID int32, message []byte) error {
	flags := binary.LittleEndian.Uint32(message[16:])
	end := len(message)
	if flags&flagChecksumPres != 0 {
		end -= 4
	}
	var body []byte
	sequenced := int32(-1) // documents in kind-1 sections (insert's "documents")
	for pos := 20; pos < end; {
		kind := message[pos]
		pos++
		if pos+4 > end {
			return fmt.Errorf("truncated section")
		}
		size := int(int32(binary.LittleEndian.Uint32(message[pos:])))
		if size < 5 || pos+size > end {
			return fmt.Errorf("bad section size")
		}
		switch kind {
		case 0:
			body = message[pos : pos+size]
		case 1:
			if sequenced < 0 {
				sequenced = 0
			}
			section := message[pos : pos+size]
			at := 4
			for at < len(section) && section[at] != 0 {
				at++
			}
			for at++; at+4 <= len(section); sequenced++ {
				at += int(int32(binary.LittleEndian.Uint32(section[at:])))
			}
		default:
			return fmt.Errorf("unknown section kind %d", kind)
		}
		pos += size
	}
	if body == nil {
		return fmt.Errorf("OP_MSG without a body")
	}
	a := c.dispatch(body, sequenced)
	if flags&flagMoreToCome != 0 {
		return nil
	}
	if a.document != nil {
		a.r = reply{body: msgBody(a.document), cursorAt: -1}
	}
	return c.write(requestID, opMsg, a.r, a.cursorID)
}

// handleQuery answers OP_QUERY commands (the legacy handshake) with OP_REPLY.
func (c *conn) handleQuery(requestID int32, message []byte) error {
	pos := 20
	for pos < len(message) && message[pos] != 0 {
		pos++
	}
	collection := string(message[20:pos])
	pos += 1 + 8
	if pos+4 > len(message) {
		return fmt.Errorf("truncated OP_QUERY")
	}
	size := int(int32(binary.LittleEndian.Uint32(message[pos:])))
	if size < 5 || pos+size > len(message) {
		return fmt.Errorf("bad OP_QUERY document")
	}
	query := message[pos : pos+size]
	if wrapped, ok := lookup(query, "$query"); ok && wrapped.kind == 0x03 {
		query = wrapped.value
	}
	var document []byte
	if !strings.HasSuffix(collection, ".$cmd") {
		document = newDoc().Double("ok", 0).String("errmsg", "OP_QUERY is only for commands").Int32("code", 352).bytes()
	} else {
		a := c.dispatch(query, -1)
		document = a.document
		if document == nil { // a prepared OP_MSG reply: its document, with the cursor id in place
			document = append([]byte(nil), a.r.body[5:]...)
			if a.r.cursorAt >= 0 {
				binary.LittleEndian.PutUint64(document[a.r.cursorAt-5:], uint64(a.cursorID))
			}
		}
	}
	// OP_REPLY: responseFlags, cursorID, startingFrom, numberReturned, the document.
	body := make([]byte, 20, 20+len(document))
	binary.LittleEndian.PutUint32(body[16:], 1)
	body = append(body, document...)
	return c.write(requestID, opReply, reply{body: body, cursorAt: -1}, 0)
}

// write sends the header and a prepared body with one writev; cursorID replaces the body's marker.
func (c *conn) write(responseTo int32, opCode uint32, r reply, cursorID int64) error {
	c.nextReq++
	prefix := 0
	if r.cursorAt >= 0 {
		prefix = r.cursorAt + 8
		copy(c.head[16:], r.body[:prefix])
		binary.LittleEndian.PutUint64(c.head[16+r.cursorAt:], uint64(cursorID))
	}
	binary.LittleEndian.PutUint32(c.head[0:], uint32(16+len(r.body)))
	binary.LittleEndian.PutUint32(c.head[4:], uint32(c.nextReq))
	binary.LittleEndian.PutUint32(c.head[8:], uint32(responseTo))
	binary.LittleEndian.PutUint32(c.head[12:], opCode)
	buffers := net.Buffers{c.head[:16+prefix], r.body[prefix:]}
	_, err := buffers.WriteTo(c.c)
	return err
}

// answer is what dispatch decided: a prepared reply (with the cursor id to put in it), or a document
// built for this request (not nil then).
type answer struct {
	r        reply
	cursorID int64
	document []byte
}

func prepared(r reply) answer             { return answer{r: r} }
func built(document []byte) answer        { return answer{document: document} }
func withCursor(r reply, id int64) answer { return answer{r: r, cursorID: id} }

// dispatch answers one command.
func (c *conn) dispatch(body []byte, sequenced int32) answer {
	first, ok := firstElement(body)
	if !ok {
		return built(errorDoc(2, "BadValue", "empty command"))
	}
	s := c.s
	switch string(first.key) {
	case "find":
		name, _ := first.str()
		switch name {
		case s.bigColl:
			return prepared(s.big)
		case s.streamColl:
			id := s.nextCursor.Add(1)
			s.cursorsMu.Lock()
			s.cursors[id] = 1
			s.cursorsMu.Unlock()
			return withCursor(s.streamFirst, id)
		}
		return prepared(s.small)
	case "getMore":
		id, _ := first.int64()
		s.cursorsMu.Lock()
		sent, known := s.cursors[id]
		if known {
			sent++
			if sent >= s.batches {
				delete(s.cursors, id)
			} else {
				s.cursors[id] = sent
			}
		}
		s.cursorsMu.Unlock()
		if !known {
			return built(errorDoc(43, "CursorNotFound", fmt.Sprintf("cursor id %d not found", id)))
		}
		if sent >= s.batches {
			return prepared(s.streamLast)
		}
		return withCursor(s.streamMore, id)
	case "insert":
		n := sequenced
		if n < 0 {
			n = 0
			if documents, ok := lookup(body, "documents"); ok && documents.kind == 0x04 {
				_ = each(documents.value, func(element) bool { n++; return true })
			}
		}
		if n == 1 {
			return prepared(s.insertOne)
		}
		return built(newDoc().Int32("n", n).Double("ok", 1).bytes())
	case "killCursors":
		if cursors, ok := lookup(body, "cursors"); ok && cursors.kind == 0x04 {
			s.cursorsMu.Lock()
			_ = each(cursors.value, func(e element) bool {
				if id, ok := e.int64(); ok {
					delete(s.cursors, id)
				}
				return true
			})
			s.cursorsMu.Unlock()
		}
		return prepared(s.ok)
	case "hello", "isMaster", "ismaster":
		return built(c.hello(body, string(first.key)))
	case "buildInfo", "buildinfo":
		return built(newDoc().String("version", "6.0.0").IntArray("versionArray", 6, 0, 0, 0).
			String("gitVersion", "").Int32("bits", 64).Int32("maxBsonObjectSize", maxBSONSize).Double("ok", 1).bytes())
	case "saslStart":
		return built(c.saslStart(body))
	case "saslContinue":
		return built(c.saslContinue(body))
	}
	return prepared(s.ok) // ping, endSessions, logout, and anything else
}

func errorDoc(code int32, name, message string) []byte {
	return newDoc().Double("ok", 0).String("errmsg", message).Int32("code", code).String("codeName", name).bytes()
}

func (c *conn) hello(body []byte, name string) []byte {
	d := newDoc()
	if e, ok := lookup(body, "helloOk"); ok && e.truthy() {
		d.Bool("helloOk", true)
	}
	if name == "hello" {
		d.Bool("isWritablePrimary", true)
	} else {
		d.Bool("ismaster", true)
	}
	d.Int32("maxBsonObjectSize", maxBSONSize).Int32("maxMessageSizeBytes", maxMessageSize).
		Int32("maxWriteBatchSize", 100000).Date("localTime", time.Now()).Int32("logicalSessionTimeoutMinutes", 30).
		Int32("connectionId", c.id).Int32("minWireVersion", 0).Int32("maxWireVersion", maxWireVersion).
		Bool("readOnly", false)
	if e, ok := lookup(body, "saslSupportedMechs"); ok {
		if who, _ := e.str(); who == "admin."+c.s.user {
			d.StringArray("saslSupportedMechs", c.s.mechanisms...)
		}
	}
	if e, ok := lookup(body, "speculativeAuthenticate"); ok && e.kind == 0x03 {
		if started := c.saslStart(e.value); started != nil {
			if okElement, _ := lookup(started, "ok"); okElement.truthy() {
				d.Doc("speculativeAuthenticate", started)
			}
		}
	}
	return d.Double("ok", 1).bytes()
}

func authFailed() []byte {
	return errorDoc(18, "AuthenticationFailed", "Authentication failed.")
}

func (c *conn) saslStart(body []byte) []byte {
	mechanism := ""
	if e, ok := lookup(body, "mechanism"); ok {
		mechanism, _ = e.str()
	}
	var payload []byte
	if e, ok := lookup(body, "payload"); ok {
		payload, _ = e.binary()
	}
	skipEmpty := false
	if e, ok := lookup(body, "options"); ok && e.kind == 0x03 {
		if skip, ok := lookup(e.value, "skipEmptyExchange"); ok {
			skipEmpty = skip.truthy()
		}
	}
	if c.s.keys[mechanism] == nil {
		return errorDoc(334, "MechanismUnavailable", "Received authentication for mechanism "+mechanism+" which is not enabled")
	}
	conversation, first, ok := c.s.scramStart(mechanism, payload, skipEmpty)
	if !ok {
		return authFailed()
	}
	c.scram = conversation
	c.scramID++
	return newDoc().Int32("conversationId", c.scramID).Bool("done", false).Binary("payload", first).Double("ok", 1).bytes()
}

func (c *conn) saslContinue(body []byte) []byte {
	conversation := c.scram
	if conversation == nil {
		return errorDoc(17, "ProtocolError", "No SASL session state found")
	}
	if conversation.step == 2 {
		c.scram = nil
		return newDoc().Int32("conversationId", c.scramID).Bool("done", true).Binary("payload", nil).Double("ok", 1).bytes()
	}
	var payload []byte
	if e, ok := lookup(body, "payload"); ok {
		payload, _ = e.binary()
	}
	final, ok := conversation.finish(payload)
	if !ok {
		c.scram = nil
		return authFailed()
	}
	done := conversation.skipEmpty
	if done {
		c.scram = nil
	} else {
		conversation.step = 2
	}
	return newDoc().Int32("conversationId", c.scramID).Bool("done", done).Binary("payload", final).Double("ok", 1).bytes()
}
