package app

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"

	"github.com/kvproxy/kvproxy/accesspolicy"
	"github.com/kvproxy/kvproxy/clientauth"
	"github.com/kvproxy/kvproxy/internal/audit"
	"github.com/kvproxy/kvproxy/internal/certfile"
	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/proxy"
)

// service holds the shared service's parts: TLS on the proxy listener,
// client authentication with its access policy, and the audit log. Each is
// nil when its setting is off.
type service struct {
	certs    *certfile.Source
	verifier *clientauth.Verifier
	policy   *accesspolicy.Watcher
	audit    *audit.Logger
}

// newService builds the shared service's parts; an invalid certificate or
// policy is a configuration error (exit 2).
func newService(cfg *config.Config, logger *slog.Logger) (*service, error) {
	var s service
	var err error
	if cfg.TLSCertFile != "" {
		s.certs, err = certfile.New(certfile.Options{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile,
			OnReload: func(c *tls.Certificate) {
				logger.Info("serving certificate reloaded", slog.Time("notAfter", c.Leaf.NotAfter))
			},
			OnError: func(err error) {
				logger.Warn("serving certificate not reloaded; the previous one is served", slog.String("detail", err.Error()))
			}})
		if err != nil {
			return nil, &config.Error{Problems: []string{"KVPROXY_TLS_CERT_FILE, KVPROXY_TLS_KEY_FILE: " + err.Error()}}
		}
	}
	if cfg.ClientAuth == "kubernetes" {
		s.verifier, err = clientauth.NewVerifier(clientauth.Options{Issuer: cfg.ClientAuthIssuer,
			Audience: cfg.ClientAuthAudience, TokenFile: cfg.ClientAuthTokenFile})
		if err != nil {
			return nil, &config.Error{Problems: []string{"KVPROXY_CLIENT_AUTH_ISSUER: " + err.Error()}}
		}
		s.policy, err = accesspolicy.NewWatcher(cfg.AccessPolicyFile, accesspolicy.WatcherOptions{
			OnReload: func(*accesspolicy.Policy) {
				logger.Info("access policy reloaded", slog.String("file", cfg.AccessPolicyFile))
			},
			OnError: func(err error) {
				logger.Warn("access policy not reloaded; the previous rules stay in force", slog.String("detail", err.Error()))
			}})
		if err != nil {
			return nil, &config.Error{Problems: []string{"KVPROXY_ACCESS_POLICY_FILE: " + err.Error()}}
		}
	}
	if cfg.AuditLog {
		s.audit = audit.NewJSON(os.Stderr)
	}
	return &s, nil
}

// proxyOptions adds the service's parts to the proxy's options.
func (s *service) proxyOptions(o *proxy.Options) {
	if s.verifier != nil {
		o.ClientAuth, o.Policy = s.verifier, s.policy.Policy
	}
	if s.audit != nil {
		o.OnRequest = func(r proxy.RequestRecord) {
			s.audit.Log(context.Background(), audit.Record{Time: r.Time, Client: r.Client, Method: r.Method, Path: r.Path,
				Status: r.Status, Diagnosis: r.Diagnosis, Cache: r.Cache, VaultRequestID: r.VaultRequestID, Duration: r.Duration})
		}
	}
}

// listener wraps the proxy listener in TLS when it is on.
func (s *service) listener(ln net.Listener) net.Listener {
	if s.certs == nil {
		return ln
	}
	return tls.NewListener(ln, s.certs.ServerConfig())
}

// start fetches the issuer's keys once and watches the policy until ctx ends.
func (s *service) start(ctx context.Context, logger *slog.Logger) {
	if s.verifier == nil {
		return
	}
	go func() {
		if err := s.verifier.Refresh(ctx); err != nil {
			logger.Warn("could not fetch the client token issuer's keys; will try on the first request", slog.String("detail", err.Error()))
		}
	}()
	go s.policy.Run(ctx)
}
