// http-routers serves the same routes through one of the routers gotrail
// reads http.route from, for the end-to-end tests.
//
//	http-routers -router gorilla|chi|gin [-addr 127.0.0.1:0] [-generated N]
//
// Routes (in each router's own template syntax): GET /users/{id},
// POST /users/{id}/orders, GET /api/v1/items/{id} (through a sub-router or
// group), and with -generated N the exact routes GET /gen/0 … /gen/N-1.
// Prints "listening on ADDR" once it serves.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/go-chi/chi/v5"
	"github.com/gorilla/mux"
)

func ok(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }

func created(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusCreated) }

func gorillaRouter(generated int) http.Handler {
	r := mux.NewRouter()
	r.HandleFunc("/users/{id}", ok).Methods(http.MethodGet)
	r.HandleFunc("/users/{id}/orders", created).Methods(http.MethodPost)
	api := r.PathPrefix("/api/v1").Subrouter()
	api.HandleFunc("/items/{id}", ok).Methods(http.MethodGet)
	for i := 0; i < generated; i++ {
		r.HandleFunc(fmt.Sprintf("/gen/%d", i), ok).Methods(http.MethodGet)
	}
	return r
}

func chiRouter(generated int) http.Handler {
	r := chi.NewRouter()
	r.Get("/users/{id}", ok)
	r.Post("/users/{id}/orders", created)
	r.Route("/api/v1", func(api chi.Router) {
		api.Get("/items/{id}", ok)
	})
	for i := 0; i < generated; i++ {
		r.Get(fmt.Sprintf("/gen/%d", i), ok)
	}
	return r
}

func ginRouter(generated int) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/users/:id", gin.WrapF(ok))
	r.POST("/users/:id/orders", gin.WrapF(created))
	api := r.Group("/api/v1")
	api.GET("/items/:id", gin.WrapF(ok))
	for i := 0; i < generated; i++ {
		r.GET(fmt.Sprintf("/gen/%d", i), gin.WrapF(ok))
	}
	return r
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	router := flag.String("router", "chi", "gorilla, chi or gin")
	generated := flag.Int("generated", 0, "exact routes /gen/0 … /gen/N-1")
	flag.Parse()

	var h http.Handler
	switch *router {
	case "gorilla":
		h = gorillaRouter(*generated)
	case "chi":
		h = chiRouter(*generated)
	case "gin":
		h = ginRouter(*generated)
	default:
		log.Fatalf("unknown router %q", *router)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	if err := http.Serve(ln, h); err != nil {
		log.Fatal(err)
	}
}
