package main

import (
	"fmt"
	amqp "github.com/rabbitmq/amqp091-go"
	"strings"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/demo"
	transport "github.com/atasks-go/atasks/internal/transport/amqp"
)

// demoTasks lists the demo tasks by namespace.
func demoTasks() map[string][]string {
	tasks := map[string][]string{}
	for _, ns := range []string{atasks.DefaultNamespace, demo.SeedNamespace} {
		tasks[ns] = atasks.Defined(ns)
	}
	return tasks
}

// deleteAtasksObjects deletes, for each namespace of tasks, the queues and
// exchanges atasks declares under the run's prefix (docs/PROTOCOL.md §1):
// the task queues of tasks[ns], the dead-letter and lease queues, the
// history stream, and the
// tasks, control, dlx, lease and activity exchanges.
func deleteAtasksObjects(e *env, tasks map[string][]string) error {
	conn, err := amqp.Dial(strings.Split(e.amqpURL, ",")[0]) // of a cluster's URLs, the first node
	if err != nil {
		return err
	}
	defer conn.Close()
	for ns, names := range tasks {
		base := e.prefix + "." + ns
		queues := []string{base + ".dead", base + ".lease", base + ".history", base + ".journal", base + ".due", base + ".cancels"}
		for k := range transport.DelayRungs { // the delay ladder
			queues = append(queues, fmt.Sprintf("%s.delay.%d", base, k))
		}
		for _, t := range names {
			queues = append(queues, base+".task."+t)
		}
		for _, q := range queues {
			if err := withChannel(conn, func(ch *amqp.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err }); err != nil {
				progress("delete queue %s: %v", q, err)
			}
		}
		for _, x := range []string{".tasks", ".control", ".dlx", ".lease", ".activity", ".due"} {
			if err := withChannel(conn, func(ch *amqp.Channel) error { return ch.ExchangeDelete(base+x, false, false) }); err != nil {
				progress("delete exchange %s: %v", base+x, err)
			}
		}
	}
	return nil
}

// withChannel runs f on a fresh channel of conn: an error from the broker
// closes the channel, so each deletion gets its own.
func withChannel(conn *amqp.Connection, f func(*amqp.Channel) error) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return f(ch)
}
