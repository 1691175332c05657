package api

import "context"

// observe runs one operation; metrics.go's collectors count it.
func observe(_ context.Context, _ *Op, f func() (any, error)) (any, error) { return f() }
