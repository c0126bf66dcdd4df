module github.com/atasks-go/atasks

go 1.26.0

require (
	github.com/fxamacker/cbor/v2 v2.10.0
	github.com/go-chi/chi/v5 v5.5.0
	github.com/rabbitmq/amqp091-go v1.16.0
	go.uber.org/goleak v1.3.0
)

require github.com/x448/float16 v0.8.4 // indirect
