package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
)

// Double doubles a number.
var Double = atasks.Define(func(_ context.Context, n int) (int, error) { return 2 * n, nil }, atasks.Name("example.double"))

// The gateway is an http.Handler over a Client: here one that also serves
// the tasks in-process, over loopback; with AMQP namespaces it fronts
// workers on other hosts.
func Example() {
	ctx := context.Background()
	client, err := atasks.NewClient(atasks.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		log.Fatal(err)
	}
	worker, err := atasks.NewWorker(client, atasks.WorkerConfig{Tasks: []string{Double.Name()}}) // out of example scope with workers elsewhere
	if err != nil {
		log.Fatal(err)
	}
	if err := worker.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx) // after the worker
	defer worker.Stop(ctx)

	gw, err := gateway.New(gateway.Config{Client: client})
	if err != nil {
		log.Fatal(err)
	}
	defer gw.Close()
	srv := httptest.NewServer(gw) // or http.Server{Handler: gw}
	defer srv.Close()

	res, err := http.Post(srv.URL+"/v1/ns/default/tasks/example.double", "application/json", strings.NewReader("21"))
	if err != nil {
		log.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	fmt.Println(res.StatusCode, strings.Contains(string(body), `"state":"succeeded"`), strings.Contains(string(body), `"result":42`))
	// Output: 200 true true
}
