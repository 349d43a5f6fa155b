//go:build go1.24

package main

import (
	"crypto/tls"
	"net/http"
)

// http2Transport is a client transport that speaks HTTP/2 only: over TLS
// (ALPN h2, any certificate accepted) or, with h2c, unencrypted with prior
// knowledge.
func http2Transport(h2c bool) (*http.Transport, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return tr, nil
}

// serveH2C makes srv accept unencrypted HTTP/2 next to HTTP/1.
func serveH2C(srv *http.Server) error {
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return nil
}
