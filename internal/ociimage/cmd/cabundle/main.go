// Command cabundle prints the CA bundle of edgeplane's image, /etc/ssl/certs/ca-certificates.crt:
// the NSS roots of golang.org/x/crypto/x509roots/fallback as PEM. The module's version in go.mod
// pins the bundle, so the image's bundle changes only with a go.mod change. Roots that carry a
// constraint X.509 cannot express (an NSS distrust-after date) are left out: a PEM file would
// trust them without it.
package main

import (
	"bufio"
	"encoding/pem"
	"fmt"
	"os"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

func main() {
	w := bufio.NewWriter(os.Stdout)
	n := 0
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		if err := pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate}); err != nil {
			fatal(err)
		}
		n++
	}
	if err := w.Flush(); err != nil {
		fatal(err)
	}
	if n == 0 {
		fatal(fmt.Errorf("the bundle has no unconstrained root"))
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "cabundle:", err)
	os.Exit(1)
}
