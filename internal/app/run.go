package app

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/kvproxy/kvproxy/auth"
	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/internal/version"
	"github.com/kvproxy/kvproxy/kvwire"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/proxy"
	"github.com/kvproxy/kvproxy/secretcache"
)

// Deps are the parts Run builds itself unless given (tests and `kvproxy dev`
// give some of them).
type Deps struct {
	// ClientOptions go to the azidentity credential (e.g. a Transport).
	ClientOptions azcore.ClientOptions
	// RootCAs trusted toward the vault; nil means the system roots.
	RootCAs *x509.CertPool
	// Started is called once both listeners are open, with their addresses.
	Started func(proxyAddr, adminAddr string)
	// MemoryLimit is the Go soft memory limit set, for the start line.
	MemoryLimit string
}

// Run serves until ctx ends, then drains: readiness turns 503, in-flight
// requests finish (up to KVPROXY_SHUTDOWN_TIMEOUT), and Run returns nil.
func Run(ctx context.Context, cfg *config.Config, d Deps, logger *slog.Logger) error {
	pt, err := build(cfg, d)
	if err != nil {
		return err
	}
	if pt.kind == auth.KindWorkloadIdentity {
		if err := auth.CheckTokenFile(cfg.AzureFederatedTokenFile); err != nil {
			logger.Warn("federated token file not readable yet; will keep trying", slog.String("detail", err.Error()))
		}
	}

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	bi := version.Get()
	m.SetBuildInfo(bi.Version, bi.Commit, bi.GoVersion)
	m.InitSeries(diagnose.Codes())

	svc, err := newService(cfg, logger)
	if err != nil {
		return err
	}
	authLog := logger.With(slog.String("component", "auth"))
	cache := auth.NewCache(auth.CacheOptions{
		Credential: pt.cred, Scope: pt.scope, RefreshBefore: cfg.RefreshBefore,
		RequestRetryInterval: cfg.TokenRetryInterval, Metrics: m, Logger: authLog, Describe: pt.credOpts.Describe,
	})
	challenges := pt.challenges(cache, authLog)
	po := proxy.Options{
		Vault: pt.vault, Tokens: cache, Scope: pt.scope,
		OnChallenge: func(c kvwire.Challenge) {
			challenges.Observe(c) //nolint:errcheck // Observe logs a refusal; the 401 is diagnosed as it is
		},
		APIVersion:      cfg.APIVersion,
		RequireMetadata: cfg.RequireMetadataHeader, ReadOnly: cfg.ReadOnly, MaxBodyBytes: cfg.MaxBodyBytes,
		MaxBufferedBytes: cfg.MaxBufferedBytes,
		UpstreamTimeout:  cfg.UpstreamTimeout, RetryMax: cfg.RetryMax, RetryMaxWait: cfg.RetryMaxWait,
		RootCAs: d.RootCAs, AllowedHosts: cfg.AllowedHosts,
		Metrics: m, Logger: logger.With(slog.String("component", "proxy")),
	}
	if cfg.CacheTTL > 0 {
		po.Cache = secretcache.New(secretcache.Options{TTL: cfg.CacheTTL, StaleIfError: cfg.CacheStaleIfError,
			MaxBytes: cfg.CacheMaxBytes, Observer: metrics.NewCacheMetrics(reg)})
	}
	svc.proxyOptions(&po)
	p, err := proxy.New(po)
	if err != nil {
		return err
	}

	var draining atomic.Bool
	ready := func() bool { return cache.Ready() && !draining.Load() }
	metrics.RegisterReady(reg, ready)

	proxyLn, err := listen(cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("KVPROXY_LISTEN_ADDR: %w", err)
	}
	defer proxyLn.Close()
	proxyLn = svc.listener(proxyLn)
	adminLn, err := listen(cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("KVPROXY_ADMIN_ADDR: %w", err)
	}
	defer adminLn.Close()

	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	_, unixProxy := config.UnixSocketPath(cfg.ListenAddr)
	proxySrv := p.Server(proxy.ServerOptions{CheckHost: !unixProxy, MaxConns: cfg.MaxConns})
	adminSrv := &http.Server{
		Handler:           adminHandler(reg, cache, &draining),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          errLog,
	}

	logger.Info("kvproxy started",
		slog.String("version", bi.Version), slog.String("commit", bi.Commit),
		slog.String("vault", pt.vault.String()), slog.String("listen", addrString(proxyLn)),
		slog.String("admin", addrString(adminLn)), slog.String("credential", string(pt.kind)),
		slog.String("identity", pt.credDesc), slog.String("scope", pt.scope), slog.Bool("scopeExplicit", pt.explicitScope),
		slog.Bool("readOnly", cfg.ReadOnly), slog.Bool("requireMetadataHeader", cfg.RequireMetadataHeader),
		slog.Duration("refreshBefore", cfg.RefreshBefore), slog.Duration("upstreamTimeout", cfg.UpstreamTimeout),
		slog.Duration("cacheTTL", cfg.CacheTTL), slog.Bool("tls", svc.certs != nil), slog.String("clientAuth", cfg.ClientAuth), slog.Bool("auditLog", cfg.AuditLog),
		slog.Int("maxConns", cfg.MaxConns), slog.Int64("maxBufferedBytes", cfg.MaxBufferedBytes), slog.String("memoryLimit", cmp.Or(d.MemoryLimit, "-")))
	for _, w := range cfg.Warnings() {
		logger.Warn("weakened default: " + w)
	}
	if d.Started != nil {
		d.Started(addrString(proxyLn), addrString(adminLn))
	}

	cacheCtx, stopCache := context.WithCancel(context.Background())
	defer stopCache()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { cache.Run(cacheCtx); return nil })
	svc.start(cacheCtx, logger)
	go func() {
		// Learn the vault's tenant from its challenge, as the Azure SDKs
		// do. The token is not held back for it: the scope is known.
		dctx, cancel := context.WithTimeout(cacheCtx, cfg.UpstreamTimeout)
		defer cancel()
		if _, err := pt.discover(dctx, challenges, cfg.APIVersion); err != nil && !errors.Is(err, auth.ErrChallengeRefused) {
			logger.Warn("could not learn the vault's challenge; will learn it from the first 401", slog.String("detail", err.Error()))
		}
	}()
	g.Go(func() error { return proxySrv.Serve(proxyLn) })
	g.Go(func() error { return serve(adminSrv, adminLn) })
	g.Go(func() error {
		<-gctx.Done()
		draining.Store(true)
		logger.Info("draining", slog.Duration("timeout", cfg.ShutdownTimeout))
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := proxySrv.ShutdownWithContext(sctx); err != nil {
			logger.Warn("drain deadline passed; closing open connections", slog.String("error", err.Error()))
		}
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		defer acancel()
		adminSrv.Shutdown(actx) //nolint:errcheck // best effort; the process is ending
		stopCache()
		return nil
	})
	err = g.Wait()
	if err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

func serve(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func addrString(ln net.Listener) string {
	if ln.Addr().Network() == "unix" {
		return "unix://" + ln.Addr().String()
	}
	return ln.Addr().String()
}

// adminHandler serves /healthz, /readyz and /metrics.
func adminHandler(reg *prometheus.Registry, cache *auth.Cache, draining *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Liveness: the process serves HTTP. It never depends on Entra
		// or the vault, so an outage there does not restart the pod.
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case draining.Load():
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		case cache.Ready():
			body := map[string]string{"status": "ready"}
			if c, ok := cache.Claims(); ok && !c.ExpiresAt.IsZero() {
				body["tokenExpiresOn"] = c.ExpiresAt.UTC().Format(time.RFC3339)
			}
			writeJSON(w, http.StatusOK, body)
		default:
			body := map[string]string{"status": "not ready", "reason": "no valid token held yet"}
			if te := cache.LastError(); te != nil {
				body["diagnosis"] = diagnose.TokenUnavailable
				body["reason"] = te.Detail
			}
			writeJSON(w, http.StatusServiceUnavailable, body)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck
}
