// kafka-client: writes and reads messages with segmentio/kafka-go against a
// broker, for the Kafka tests.
//
//	kafka-client BOOTSTRAP TOPIC N
//
// creates TOPIC (one partition), writes N messages with a Writer, reads them
// back with a Reader in a consumer group, then writes one message to a topic
// that does not exist; prints "written N", "read N" and "missing topic: ERR".
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

func createTopic(bootstrap, topic string) error {
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

func main() {
	if len(os.Args) != 4 {
		log.Fatal("usage: kafka-client BOOTSTRAP TOPIC N")
	}
	bootstrap, topic := os.Args[1], os.Args[2]
	n, _ := strconv.Atoi(os.Args[3])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := createTopic(bootstrap, topic); err != nil {
		log.Fatalf("create topic: %v", err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(bootstrap), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: 10 * time.Millisecond}
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprintf("key-%d", i)), Value: []byte(fmt.Sprintf("value-%d", i))}
	}
	// the topic's leader may take a moment to be known after its creation
	var err error
	for try := 0; try < 50; try++ {
		if err = w.WriteMessages(ctx, msgs...); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		log.Fatalf("write: %v", err)
	}
	w.Close()
	fmt.Printf("written %d\n", n)

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{bootstrap}, Topic: topic, GroupID: topic + "-group", MinBytes: 1, MaxBytes: 1 << 20})
	for i := 0; i < n; i++ {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			log.Fatalf("read %d: %v", i, err)
		}
		if string(m.Key) != fmt.Sprintf("key-%d", i) {
			log.Fatalf("read %d: key %q", i, m.Key)
		}
	}
	r.Close()
	fmt.Printf("read %d\n", n)

	missing := &kafka.Writer{Addr: kafka.TCP(bootstrap), Topic: topic + "-missing", MaxAttempts: 1}
	err = missing.WriteMessages(ctx, kafka.Message{Value: []byte("x")})
	fmt.Printf("missing topic: %v\n", err)
}
