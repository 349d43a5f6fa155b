// kafka-client: an HTTP service that writes and reads Kafka messages with
// segmentio/kafka-go, for the Kafka probes' tests.
//
//	KAFKA_BOOTSTRAP=127.0.0.1:9092 kafka-client
//
// GET /create?topic=T            creates topic T (one partition)
// GET /produce?topic=T&n=N&id=I  writes N messages (keys I-0 … I-(N-1)) in one
//                                WriteMessages call on the request's goroutine,
//                                through one Writer per topic shared by all
//                                requests (their messages share batches);
//                                &traceparent=TP sets that header on each
// GET /held?topic=T&n=N&id=I     writes N messages like /produce, through a
//                                Writer of its own whose Completion (called
//                                by the batch's goroutine once the broker
//                                answered, before the batch completes) waits
//                                for GET /release (at most 60 s): the
//                                messages are in the partition, readable,
//                                while the write is still in progress
// GET /release                   lets the held writes complete
// GET /missing?topic=T           writes one message to T, which does not
//                                exist; answers with the error
// GET /consume?topic=T&group=G&n=N[&fetch=1][&call=1]
//                                reads N messages in consumer group G (empty:
//                                no group, partition 0 from its start) on a
//                                goroutine started with the program (not by a
//                                request): ReadMessage, or with fetch=1
//                                FetchMessage then CommitMessages; with call=1
//                                it sends GET /noop to itself while handling
//                                each message; answers "read N" and the keys
// GET /noop                      answers 204
// GET /loop?topic=T&n=N          writes N messages one by one, each its own
//                                WriteMessages call and batch (BatchSize 1);
//                                answers the nanoseconds it took
// GET /readloop?topic=T&n=N      reads the first N messages of T (partition 0,
//                                no group) with FetchMessage; answers the
//                                nanoseconds it took
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

var bootstrap = os.Getenv("KAFKA_BOOTSTRAP")

func createTopic(topic string) error {
	conn, err := kafka.Dial("tcp", bootstrap)
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

var (
	writersMu sync.Mutex
	writers   = map[string]*kafka.Writer{}
)

func writer(topic string) *kafka.Writer {
	writersMu.Lock()
	defer writersMu.Unlock()
	w := writers[topic]
	if w == nil {
		w = &kafka.Writer{Addr: kafka.TCP(bootstrap), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: 10 * time.Millisecond}
		writers[topic] = w
	}
	return w
}

type job struct {
	topic, group string
	n            int
	fetch, call  bool
	done         chan string
}

var jobs = make(chan job)

var (
	releaseOnce sync.Once
	release     = make(chan struct{})
)

// consumer runs on a goroutine of its own, started by main.
func consumer(self string) {
	for j := range jobs {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{bootstrap}, Topic: j.topic, GroupID: j.group, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var keys []string
		var failure error
		for i := 0; i < j.n; i++ {
			var m kafka.Message
			var err error
			if j.fetch {
				if m, err = r.FetchMessage(ctx); err == nil {
					err = r.CommitMessages(ctx, m)
				}
			} else {
				m, err = r.ReadMessage(ctx)
			}
			if err != nil {
				failure = err
				break
			}
			keys = append(keys, string(m.Key))
			if j.call {
				if resp, err := http.Get(self + "/noop"); err == nil {
					resp.Body.Close()
				}
			}
		}
		cancel()
		r.Close()
		if failure != nil {
			j.done <- fmt.Sprintf("error after %d: %v", len(keys), failure)
		} else {
			j.done <- fmt.Sprintf("read %d\n%s", len(keys), strings.Join(keys, "\n"))
		}
	}
}

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	self := "http://" + ln.Addr().String()
	go consumer(self)
	mux := http.NewServeMux()
	mux.HandleFunc("/create", func(w http.ResponseWriter, r *http.Request) {
		if err := createTopic(r.URL.Query().Get("topic")); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("/produce", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		msgs := make([]kafka.Message, n)
		for i := range msgs {
			msgs[i] = kafka.Message{Key: []byte(fmt.Sprintf("%s-%d", q.Get("id"), i)), Value: []byte(fmt.Sprintf("value-%d", i))}
			if tp := q.Get("traceparent"); tp != "" {
				msgs[i].Headers = []kafka.Header{{Key: "other", Value: []byte("x")}, {Key: "traceparent", Value: []byte(tp)}}
			}
		}
		if err := writer(q.Get("topic")).WriteMessages(r.Context(), msgs...); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "written %d", n)
	})
	mux.HandleFunc("/held", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		msgs := make([]kafka.Message, n)
		for i := range msgs {
			msgs[i] = kafka.Message{Key: []byte(fmt.Sprintf("%s-%d", q.Get("id"), i)), Value: []byte(fmt.Sprintf("held-%d", i))}
		}
		hw := &kafka.Writer{Addr: kafka.TCP(bootstrap), Topic: q.Get("topic"), RequiredAcks: kafka.RequireOne, BatchSize: n,
			Completion: func([]kafka.Message, error) {
				select {
				case <-release:
				case <-time.After(60 * time.Second):
				}
			}}
		defer hw.Close()
		if err := hw.WriteMessages(r.Context(), msgs...); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "written %d", n)
	})
	mux.HandleFunc("/release", func(w http.ResponseWriter, r *http.Request) {
		releaseOnce.Do(func() { close(release) })
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) {
		missing := &kafka.Writer{Addr: kafka.TCP(bootstrap), Topic: r.URL.Query().Get("topic"), MaxAttempts: 1}
		defer missing.Close()
		err := missing.WriteMessages(r.Context(), kafka.Message{Key: []byte("missing-0"), Value: []byte("x")})
		fmt.Fprintf(w, "missing topic: %v", err)
	})
	mux.HandleFunc("/consume", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		j := job{topic: q.Get("topic"), group: q.Get("group"), n: n, fetch: q.Get("fetch") == "1", call: q.Get("call") == "1", done: make(chan string)}
		jobs <- j
		fmt.Fprint(w, <-j.done)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		lw := &kafka.Writer{Addr: kafka.TCP(bootstrap), Topic: q.Get("topic"), RequiredAcks: kafka.RequireOne, BatchSize: 1}
		defer lw.Close()
		value := []byte("loop-value")
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := lw.WriteMessages(r.Context(), kafka.Message{Key: []byte(strconv.Itoa(i)), Value: value}); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
		}
		fmt.Fprint(w, time.Since(start).Nanoseconds())
	})
	mux.HandleFunc("/readloop", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{bootstrap}, Topic: q.Get("topic"), Partition: 0, MinBytes: 1, MaxBytes: 8 << 20})
		defer rd.Close()
		// the first message waits for the connection and the first fetch: not timed
		if _, err := rd.FetchMessage(r.Context()); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		start := time.Now()
		for i := 1; i < n; i++ {
			if _, err := rd.FetchMessage(r.Context()); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
		}
		fmt.Fprint(w, time.Since(start).Nanoseconds())
	})
	mux.HandleFunc("/noop", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	fmt.Printf("listening on %s\n", ln.Addr())
	log.Fatal(http.Serve(ln, mux))
}
