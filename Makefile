# Shortcuts for the commands the README documents; each is one line.
.PHONY: run test bench cluster

run: ## the gateway with the demo tasks, in-process, on 127.0.0.1:8080
	go run ./cmd/gateway

test: ## every test, as CI runs them
	scripts/test

bench: ## the load tool's scenarios against their floors, the Go micro-benchmarks, then the independent harness's side-by-side if present (about 8 minutes)
	go run ./cmd/atasks-bench --duration 2s --rounds 2
	go test -run '^$$' -bench . -benchmem ./ ./internal/codec ./gateway
	scripts/side-by-side

cluster: ## RabbitMQ (if needed), a gateway and two workers as local processes
	scripts/cluster
