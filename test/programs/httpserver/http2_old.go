//go:build !go1.24

package main

import (
	"crypto/tls"
	"errors"
	"net/http"
)

var errNoH2C = errors.New("unencrypted HTTP/2 needs Go 1.24 (net/http's Protocols)")

// http2Transport is a client transport that speaks HTTP/2 over TLS (ALPN
// h2, any certificate accepted); net/http before Go 1.24 has no h2c.
func http2Transport(h2c bool) (*http.Transport, error) {
	if h2c {
		return nil, errNoH2C
	}
	return &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}, nil
}

func serveH2C(srv *http.Server) error { return errNoH2C }
