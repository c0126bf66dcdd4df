package demo

import "github.com/atasks-go/atasks"

// VolatileFib returns a copy of the default registry whose demo.fib is
// not durable (atasks.Durable(false)): the benchmarks' reference for what
// durability costs a tree of tiny tasks.
func VolatileFib() *atasks.Registry {
	r := atasks.DefaultRegistry().Without(Fib.Name())
	atasks.Define(fib, atasks.Name(Fib.Name()), atasks.InRegistry(r), atasks.Durable(false))
	return r
}
