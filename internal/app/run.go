package app

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/kvproxy/kvproxy/auth"
	"github.com/kvproxy/kvproxy/internal/clock"
	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/internal/version"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/proxy"
)

// Deps are the parts Run builds itself unless given (tests and `kvproxy dev`
// give some of them).
type Deps struct {
	// ClientOptions go to the azidentity credential (e.g. a Transport).
	ClientOptions azcore.ClientOptions
	// RootCAs trusted toward the vault; nil means the system roots.
	RootCAs *x509.CertPool
	Clock   clock.Clock
	// Started is called once both listeners are open, with their addresses.
	Started func(proxyAddr, adminAddr string)
}

// Run serves until ctx ends, then drains: readiness turns 503, in-flight
// requests finish (up to KVPROXY_SHUTDOWN_TIMEOUT), and Run returns nil.
func Run(ctx context.Context, cfg *config.Config, d Deps, logger *slog.Logger) error {
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	vaultURL, err := config.ParseVaultURL(cfg.VaultURL)
	if err != nil {
		return err
	}
	scope, explicitScope := cfg.Scope()
	kind := cfg.EffectiveCredential()
	cred, credDesc, err := auth.NewCredential(credentialOptions(cfg, kind, d))
	if err != nil {
		return &config.Error{Problems: []string{"KVPROXY_CREDENTIAL=" + kind + ": " + err.Error()}}
	}
	if kind == auth.KindWorkloadIdentity {
		if err := auth.CheckTokenFile(cfg.AzureFederatedTokenFile); err != nil {
			logger.Warn("federated token file not readable yet; will keep trying", slog.String("detail", err.Error()))
		}
	}

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	bi := version.Get()
	m.SetBuildInfo(bi.Version, bi.Commit, bi.GoVersion)
	m.InitSeries(proxy.DiagnosisCodes())

	cache := auth.NewCache(auth.CacheOptions{
		Credential: cred, Scope: scope, RefreshBefore: cfg.RefreshBefore,
		Clock: d.Clock, Metrics: m, Logger: logger.With(slog.String("component", "auth")),
	})
	transport := proxy.NewTransport(proxy.TransportOptions{RootCAs: d.RootCAs, ResponseHeaderTimeout: cfg.UpstreamTimeout})
	disc := auth.NewDiscovery(vaultURL.Host, explicitScope)
	usesTenant := kind == auth.KindWorkloadIdentity || kind == auth.KindClientSecret
	learn := func(c auth.Challenge) bool {
		chScope, err := disc.Learn(c)
		if err != nil {
			logger.Error("refusing the vault's challenge; no token will be requested for it", slog.String("detail", err.Error()))
			return false
		}
		if usesTenant && c.TenantID != "" {
			cache.SetTenant(c.TenantID)
		}
		if chScope != scope && !explicitScope {
			logger.Warn("the vault's challenge asks for another scope than the one derived from its host; set KVPROXY_TOKEN_SCOPE to use it",
				slog.String("challengeScope", chScope), slog.String("scope", scope))
		}
		return true
	}
	var lastChallenge atomic.Pointer[string]
	p, err := proxy.New(proxy.Options{
		Vault: vaultURL, Tokens: cache, Renewer: cache, Inspect: inspect, Scope: scope,
		VaultTenant: disc.Tenant,
		OnChallenge: func(h string) {
			// Vaults repeat the same challenge on every 401; learn (and
			// log) only what is new.
			if last := lastChallenge.Load(); last != nil && *last == h {
				return
			}
			lastChallenge.Store(&h)
			if c, err := auth.ParseChallenge(h); err == nil && c.Error == "" {
				learn(c)
			}
		},
		Transport:       transport,
		APIVersion:      cfg.APIVersion,
		RequireMetadata: cfg.RequireMetadataHeader, ReadOnly: cfg.ReadOnly, MaxBodyBytes: cfg.MaxBodyBytes,
		UpstreamTimeout: cfg.UpstreamTimeout, RetryMax: cfg.RetryMax, RetryMaxWait: cfg.RetryMaxWait,
		Metrics: m, Logger: logger.With(slog.String("component", "proxy")), Clock: d.Clock,
	})
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
	adminLn, err := listen(cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("KVPROXY_ADMIN_ADDR: %w", err)
	}
	defer adminLn.Close()

	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	proxySrv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      cfg.UpstreamTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
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
		slog.String("vault", vaultURL.String()), slog.String("listen", addrString(proxyLn)),
		slog.String("admin", addrString(adminLn)), slog.String("credential", kind),
		slog.String("identity", credDesc), slog.String("scope", scope), slog.Bool("scopeExplicit", explicitScope),
		slog.Bool("readOnly", cfg.ReadOnly), slog.Bool("requireMetadataHeader", cfg.RequireMetadataHeader),
		slog.Duration("refreshBefore", cfg.RefreshBefore), slog.Duration("upstreamTimeout", cfg.UpstreamTimeout))
	if d.Started != nil {
		d.Started(addrString(proxyLn), addrString(adminLn))
	}

	cacheCtx, stopCache := context.WithCancel(context.Background())
	defer stopCache()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { cache.Run(cacheCtx); return nil })
	go func() {
		// Learn the vault's tenant from its challenge, as the Azure SDKs
		// do. The token is not held back for it: the scope is known.
		dctx, cancel := context.WithTimeout(cacheCtx, cfg.UpstreamTimeout)
		defer cancel()
		client := &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		c, err := auth.DiscoverChallenge(dctx, client, vaultURL, cfg.APIVersion)
		if err != nil {
			logger.Warn("could not learn the vault's challenge; will learn it from the first 401", slog.String("detail", err.Error()))
			return
		}
		if learn(c) {
			logger.Info("vault challenge", slog.String("tenant", c.TenantID), slog.String("authority", c.Authority), slog.String("resource", c.Resource))
		}
	}()
	g.Go(func() error { return serve(proxySrv, proxyLn) })
	g.Go(func() error { return serve(adminSrv, adminLn) })
	g.Go(func() error {
		<-gctx.Done()
		draining.Store(true)
		logger.Info("draining", slog.Duration("timeout", cfg.ShutdownTimeout))
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		err := proxySrv.Shutdown(sctx)
		if err != nil {
			logger.Warn("drain deadline passed; closing open connections", slog.String("error", err.Error()))
			proxySrv.Close()
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

// credentialOptions maps the configuration to the credential's options.
func credentialOptions(cfg *config.Config, kind string, d Deps) auth.CredentialOptions {
	return auth.CredentialOptions{
		Kind: kind, ClientID: cfg.IdentityClientID, TenantID: cfg.AzureTenantID,
		TokenFile: cfg.AzureFederatedTokenFile, ClientSecret: string(cfg.AzureClientSecret),
		AuthorityHost: cfg.AzureAuthorityHost, IdentityEndpoint: cfg.IdentityEndpoint,
		ClientOptions: d.ClientOptions, DisableInstanceDiscovery: cfg.DisableInstanceDiscovery,
	}
}

// inspect reads a token's claims for diagnostics.
func inspect(token string) proxy.TokenInfo {
	c, err := auth.ParseClaims(token)
	if err != nil {
		return proxy.TokenInfo{}
	}
	return proxy.TokenInfo{
		Identity: proxy.Identity{TenantID: c.TenantID, ObjectID: c.ObjectID, AppID: c.AppID},
		Audience: c.Audience, ExpiresAt: c.ExpiresAt, NotBefore: c.NotBefore,
	}
}

// listen opens a TCP listener, or a unix socket for unix:///path: a stale
// socket file is replaced, and the socket is made 0660.
func listen(addr string) (net.Listener, error) {
	path, ok := config.UnixSocketPath(addr)
	if !ok {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
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
				body["diagnosis"] = proxy.DiagTokenUnavailable
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
