package integration

import "path/filepath"

// socketPath is where the catalog's owner answers (service.SocketPath).
func socketPath(home string) string { return filepath.Join(home, "run", "volback.sock") }
