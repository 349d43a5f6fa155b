// Command inspect-server-only serves HTTP with net/http and never sends a
// request: the target of inspect's "linked, but never called" explanation.
package main

import (
	"fmt"
	"net/http"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	if err := http.ListenAndServe("127.0.0.1:0", nil); err != nil {
		fmt.Println(err)
	}
}
