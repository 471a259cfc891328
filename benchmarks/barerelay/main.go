// Command barerelay is the floor any MongoDB proxy stands on, for benchmarks/proxy.py: a TCP relay that
// forwards bytes and does nothing else. Per client connection it dials the upstream and copies both ways
// with io.Copy in two goroutines (TCP_NODELAY on, Go's default); no parsing, no login of its own: the
// client logs in to the upstream through it. A request/reply costs it two reads and two writes plus the
// Go runtime's wakeups, which is what every proxy pays before doing any work of its own.
//
// -copy splice (the default) is plain io.Copy, which between two TCP sockets on Linux moves the bytes with
// splice(2) through a pipe; -copy buffer hides that path and copies through a 32 KiB user-space buffer
// (one read and one write per chunk). It prints "listening HOST:PORT" once it accepts connections.
// Standard library only.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
)

// onlyReader and onlyWriter hide io.ReaderFrom/io.WriterTo so that io.CopyBuffer reads and writes.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := flag.String("upstream", "", "host:port to forward every connection to")
	copyMode := flag.String("copy", "splice", "splice (io.Copy) or buffer (read/write through a buffer)")
	flag.Parse()
	if *upstream == "" || (*copyMode != "splice" && *copyMode != "buffer") {
		flag.Usage()
		os.Exit(2)
	}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", listener.Addr())
	for {
		client, err := listener.Accept()
		if err != nil {
			log.Print(err)
			continue
		}
		go relay(client.(*net.TCPConn), *upstream, *copyMode == "buffer")
	}
}

// relay forwards one client connection until both directions have ended.
func relay(client *net.TCPConn, upstream string, buffered bool) {
	defer client.Close()
	dialed, err := net.Dial("tcp", upstream)
	if err != nil {
		log.Print(err)
		return
	}
	server := dialed.(*net.TCPConn)
	defer server.Close()
	done := make(chan struct{})
	go func() {
		pipe(server, client, buffered)
		close(done)
	}()
	pipe(client, server, buffered)
	<-done
}

// pipe copies src to dst until src ends, then half-closes dst so the other side sees the end too.
func pipe(dst, src *net.TCPConn, buffered bool) {
	if buffered {
		io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, make([]byte, 32*1024))
	} else {
		io.Copy(dst, src)
	}
	dst.CloseWrite()
}
