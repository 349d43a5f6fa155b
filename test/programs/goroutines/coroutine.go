//go:build go1.23

package main

import (
	"fmt"
	"iter"
	"net/http"
	"strings"
)

// /pull/<id>: the call to /leaf/<id> is made inside an iterator read with
// iter.Pull, which runs it on a coroutine's goroutine (Go 1.23+), made by
// the runtime's newcoro rather than a go statement
func init() {
	routes = append(routes, func(mux *http.ServeMux) {
		mux.HandleFunc("/pull/", func(w http.ResponseWriter, r *http.Request) {
			id := strings.TrimPrefix(r.URL.Path, "/pull/")
			seq := func(yield func(error) bool) {
				yield(get(r.Context(), "/leaf/"+id))
			}
			next, stop := iter.Pull(iter.Seq[error](seq))
			defer stop()
			if err, ok := next(); !ok || err != nil {
				http.Error(w, fmt.Sprint("pull: ", ok, err), http.StatusBadGateway)
				return
			}
			fmt.Fprintln(w, "ok")
		})
	})
}
