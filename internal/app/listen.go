package app

import "strings"

// adminURL is how the dev banner shows the admin listener.
func adminURL(addr string) string {
	if strings.HasPrefix(addr, "unix://") {
		return addr
	}
	return "http://" + addr
}
