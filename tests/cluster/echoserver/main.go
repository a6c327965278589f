// Command echoserver is the tests' workload (tests/cluster): on TCP port 8080 it writes the pod's
// hostname and a newline to every connection, then echoes what it reads until the client closes.
// Static, no libc: the tests pack it into an image of one file.
package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"os"
)

func main() {
	host, err := os.Hostname()
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			w := bufio.NewWriter(c)
			fmt.Fprintln(w, host)
			if err := w.Flush(); err != nil {
				return
			}
			_, _ = io.Copy(c, c)
		}()
	}
}
