package api

// Request is one Cinder v3 API request, as routes see it.
type Request struct{}
