package azfake

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Defaults shared by the fakes.
const (
	// DefaultTenantID is the tenant of the vault and of the identities when
	// options leave it empty.
	DefaultTenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	// DefaultObjectID is the object (principal) id of the default identity.
	DefaultObjectID = "11111111-2222-3333-4444-555555555555"
	// DefaultAppID is the application (client) id of the default identity.
	DefaultAppID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)

// defaultIdentity is the identity used when options leave it empty.
var defaultIdentity = Identity{ObjectID: DefaultObjectID, AppID: DefaultAppID}

// server runs one handler on a loopback listener.
type server struct {
	mu  sync.Mutex
	srv *http.Server
}

// start listens on addr (127.0.0.1:0 when empty) and serves h, over TLS when
// cfg is not nil. It returns scheme://host:port of the listener.
func (s *server) start(h http.Handler, addr string, cfg *tls.Config) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return "", errors.New("azfake: server already started")
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		// Clients that distrust the CA or hang up mid-handshake are part of
		// the tests; their handshake errors are noise.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	scheme := "http"
	if cfg != nil {
		scheme = "https"
		srv.TLSConfig = cfg.Clone()
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	s.srv = srv
	go func() { _ = srv.Serve(ln) }() // returns http.ErrServerClosed on Close
	return scheme + "://" + urlHost(ln.Addr()), nil
}

// close stops the server and drops its connections.
func (s *server) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	s.srv = nil
	return err
}

// urlHost renders a listener address for a URL; an unspecified address
// (listening on all interfaces) becomes 127.0.0.1.
func urlHost(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
}

// writeJSON answers status with v as JSON, without HTML escaping (Azure
// does not escape '<', '>' or '&').
func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	body := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// orNow returns now, or time.Now when now is nil.
func orNow(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}
