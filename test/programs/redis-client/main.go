// redis-client: an HTTP service whose handlers send Redis commands with
// go-redis v9 on the request's goroutine, for the redis probe's tests.
//
//	REDIS_ADDR=127.0.0.1:6390 REDIS_DB=3 redis-client
//
// GET /ops       SET (with EX), GET, GET of a missing key (redis.Nil), RPUSH of
//                string and number literals, one pipeline (INCR, INCRBY, GET)
//                and one transaction (MULTI/EXEC around INCR, EXPIRE)
// GET /wrongtype LPUSH onto a string key: the server answers WRONGTYPE
// GET /refused   GET through a client whose server refuses connections
// GET /loop?n=N  N GETs, for the latency benchmark
//
// Literals the tests must never find in a span are spelled out below.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	secretString = "secret-string-literal"
	secretNumber = 918273645
	secretList   = "secret-list-element"
)

func main() {
	db, _ := strconv.Atoi(os.Getenv("REDIS_DB"))
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR"), DB: db, PoolSize: 64})
	// a port nobody listens on: every command fails to connect, without retries
	refusedAddr := os.Getenv("REDIS_REFUSED_ADDR")
	if refusedAddr == "" {
		refusedAddr = "127.0.0.1:1"
	}
	refused := redis.NewClient(&redis.Options{Addr: refusedAddr, MaxRetries: -1, DialTimeout: time.Second})

	fail := func(w http.ResponseWriter, what string, err error) {
		http.Error(w, fmt.Sprintf("%s: %v", what, err), http.StatusInternalServerError)
	}
	http.HandleFunc("/ops", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		key := "k:" + r.URL.Query().Get("id")
		if err := rdb.Set(ctx, key, secretString, 60*time.Second).Err(); err != nil {
			fail(w, "set", err)
			return
		}
		if v, err := rdb.Get(ctx, key).Result(); err != nil || v != secretString {
			fail(w, "get", err)
			return
		}
		if err := rdb.Get(ctx, key+":missing").Err(); !errors.Is(err, redis.Nil) {
			fail(w, "get missing", err)
			return
		}
		if err := rdb.RPush(ctx, key+":list", secretList, secretNumber).Err(); err != nil {
			fail(w, "rpush", err)
			return
		}
		if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, key+":n")
			p.IncrBy(ctx, key+":n", secretNumber)
			p.Get(ctx, key)
			return nil
		}); err != nil {
			fail(w, "pipeline", err)
			return
		}
		if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, key+":t")
			p.Expire(ctx, key+":t", 60*time.Second)
			return nil
		}); err != nil {
			fail(w, "tx", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/wrongtype", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		key := "w:" + r.URL.Query().Get("id")
		if err := rdb.Set(ctx, key, secretString, time.Minute).Err(); err != nil {
			fail(w, "set", err)
			return
		}
		err := rdb.LPush(ctx, key, secretList).Err()
		fmt.Fprintln(w, err)
	})
	http.HandleFunc("/refused", func(w http.ResponseWriter, r *http.Request) {
		err := refused.Get(r.Context(), "anything").Err()
		fmt.Fprintln(w, err)
	})
	http.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		ctx := context.Background()
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := rdb.Get(ctx, "loop").Err(); err != nil && !errors.Is(err, redis.Nil) {
				fail(w, "get", err)
				return
			}
		}
		fmt.Fprintln(w, time.Since(start).Nanoseconds())
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
