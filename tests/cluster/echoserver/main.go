// Command echoserver is the tests' workload (tests/cluster): on TCP port 8080 it writes the pod's
// hostname and a newline to every connection, then echoes what it reads until the client closes;
// on port 8081 it answers every HTTP request with the hostname (for the API server's proxy).
// Static, no libc: the tests pack it into an image of one file.
package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

func main() {
	host, err := os.Hostname()
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		log.Fatal(http.ListenAndServe(":8081", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, host)
		})))
	}()
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
