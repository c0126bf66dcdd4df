package amqp_test

import (
	"context"
	"fmt"
	"log"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/amqp"
)

// Charge is served by some worker of namespace "billing".
var Charge = atasks.Ref[int, string]("billing", "billing.charge")

// A program that calls tasks of namespace billing through RabbitMQ; it
// needs no gateway and serves nothing. It needs a broker, so this example
// only compiles.
func Example() {
	ctx := context.Background()
	nss, err := amqp.Namespaces(amqp.Config{URL: "amqp://guest:guest@127.0.0.1:5672/"}, "billing")
	if err != nil {
		log.Fatal(err)
	}
	client, err := atasks.NewClient(atasks.Config{Namespaces: nss})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx)
	receipt, err := Charge.Call(atasks.WithClient(ctx, client), 1200)
	fmt.Println(receipt, err)
}
