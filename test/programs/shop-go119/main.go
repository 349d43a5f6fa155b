// Command shop is a small system of three services, for the end-to-end test
// of databases, caches and queues (test/system/shop.e2e.test.ts) and the demo:
//
//	front    (-mode front)    HTTP: GET /order?id=N calls the orders service
//	                          (gRPC /shop.Orders/Place) on the request's goroutine
//	orders   (-mode orders)   gRPC: Place reads the item from PostgreSQL (pgx
//	                          stdlib), counts the order in Redis (INCR) and
//	                          writes the order to Kafka (one message, key N)
//	consumer (-mode consumer) reads the orders from Kafka from its start (the
//	                          topic must exist: start it after "grpc on"),
//	                          long-polling while idle, and marks each one done
//	                          in Redis (SET order:N)
//
// Flags: -pg URL, -redis ADDR, -kafka BOOTSTRAP, -topic NAME, -orders ADDR
// (the front's gRPC target). Each mode prints "listening on ADDR" once it
// serves HTTP (every path of the consumer answers the number of orders
// handled); the orders service then sets up its
// table and topic and prints "grpc on ADDR" once it takes calls. Nothing here knows of tracing: no header, no
// metadata, no SDK.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"

	"sync/atomic"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var (
	mode      = flag.String("mode", "", "front, orders or consumer")
	pgURL     = flag.String("pg", "", "PostgreSQL URL (orders)")
	redisAddr = flag.String("redis", "", "Redis address (orders, consumer)")
	bootstrap = flag.String("kafka", "", "Kafka bootstrap address (orders, consumer)")
	topic     = flag.String("topic", "orders", "Kafka topic (orders, consumer)")
	ordersTo  = flag.String("orders", "", "the orders service's gRPC address (front)")
)

func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	return ln
}

func serveHTTP(h http.Handler) {
	ln := listen()
	fmt.Printf("listening on %s\n", ln.Addr())
	go http.Serve(ln, h)
}

// ---- front -------------------------------------------------------------

func front() {
	cc, err := grpc.Dial(*ordersTo, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	serveHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/order" {
			http.NotFound(w, r)
			return
		}
		out := new(wrapperspb.StringValue)
		if err := cc.Invoke(r.Context(), "/shop.Orders/Place", wrapperspb.String(r.URL.Query().Get("id")), out); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, out.Value)
	}))
}

// ---- orders ------------------------------------------------------------

type orders struct {
	db  *sql.DB
	rdb *redis.Client
	w   *kafka.Writer
}

type ordersServer interface{}

func (o *orders) place(ctx context.Context, id string) (string, error) {
	n, err := strconv.Atoi(id)
	if err != nil {
		return "", status.Error(codes.InvalidArgument, "id: "+err.Error())
	}
	var name string
	if err := o.db.QueryRowContext(ctx, "SELECT name FROM items WHERE id = $1", n%3+1).Scan(&name); err != nil {
		return "", status.Error(codes.Internal, "item: "+err.Error())
	}
	if err := o.rdb.Incr(ctx, "orders:count").Err(); err != nil {
		return "", status.Error(codes.Unavailable, "count: "+err.Error())
	}
	if err := o.w.WriteMessages(ctx, kafka.Message{Key: []byte(id), Value: []byte(name)}); err != nil {
		return "", status.Error(codes.Unavailable, "publish: "+err.Error())
	}
	return name, nil
}

func ordersMain() {
	// started at once; "grpc on ADDR" follows once the table, the topic and
	// the topic's leader are ready
	ln := listen()
	serveHTTP(http.NotFoundHandler())
	db, err := sql.Open("pgx", *pgURL)
	if err != nil {
		log.Fatal(err)
	}
	db.SetMaxOpenConns(16)
	ctx := context.Background()
	for _, q := range []string{
		"DROP TABLE IF EXISTS items",
		"CREATE TABLE items (id INTEGER, name TEXT)",
		"INSERT INTO items (id, name) VALUES (1, 'tea'), (2, 'coffee'), (3, 'cocoa')",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			log.Fatalf("%s: %v", q, err)
		}
	}
	if err := createTopic(*bootstrap, *topic); err != nil {
		log.Fatalf("create topic: %v", err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(*bootstrap), Topic: *topic, RequiredAcks: kafka.RequireOne, BatchTimeout: 2 * time.Millisecond}
	// the new topic's leader may take a moment to be known: wait for it
	// (rather than write a warm-up message, which the consumer would read)
	for try := 0; ; try++ {
		conn, err := kafka.DialLeader(ctx, "tcp", *bootstrap, *topic, 0)
		if err == nil {
			conn.Close()
			break
		}
		if try == 100 {
			log.Fatalf("topic leader: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// DisableIndentity: no CLIENT SETINFO on each new connection (servers before Redis 7.2 refuse it)
	o := &orders{db: db, rdb: redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 32, DisableIndentity: true}), w: w}
	place := func(srv interface{}, ctx context.Context, dec func(interface{}) error, ic grpc.UnaryServerInterceptor) (interface{}, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		name, err := o.place(ctx, in.Value)
		if err != nil {
			return nil, err
		}
		return wrapperspb.String(name), nil
	}
	s := grpc.NewServer()
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "shop.Orders",
		HandlerType: (*ordersServer)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Place", Handler: place}},
	}, nil)
	go s.Serve(ln)
	fmt.Printf("grpc on %s\n", ln.Addr())
}

func createTopic(bootstrap, topic string) error {
	var conn *kafka.Conn
	var err error
	for try := 0; try < 100; try++ {
		if conn, err = kafka.Dial("tcp", bootstrap); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return err
	}
	cc, err := kafka.Dial("tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return err
	}
	defer cc.Close()
	return cc.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: 1, ReplicationFactor: 1})
}

// ---- consumer ----------------------------------------------------------

func consumer() {
	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr, DisableIndentity: true})
	// one partition, read from its start: no group to join, so the reader
	// long-polls the partition at once and gets each order as soon as the
	// broker has it — often before the writer has the broker's answer
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{*bootstrap}, Topic: *topic, Partition: 0, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
	var handled atomic.Int64
	go func() {
		ctx := context.Background()
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				log.Printf("read: %v", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if err := rdb.Set(ctx, "order:"+string(m.Key), "done", time.Hour).Err(); err != nil {
				log.Printf("mark done: %v", err)
			}
			handled.Add(1)
		}
	}()
	serveHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, handled.Load())
	}))
}

func main() {
	flag.Parse()
	switch *mode {
	case "front":
		front()
	case "orders":
		ordersMain()
	case "consumer":
		consumer()
	default:
		fmt.Fprintln(os.Stderr, "-mode front|orders|consumer")
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
