// Command soak runs the real kvproxy binary for a while at a constant
// request rate with short-lived tokens and checks that nothing wears out:
// no request fails, the identity endpoint is asked for a token about once
// per refresh period, and kvproxy's goroutines and RSS do not grow after
// warm-up. The vault (over TLS) and the managed identity endpoint are the
// azfake stand-ins, in this process; kvproxy is a subprocess. It samples
// kvproxy every -interval, prints a Markdown table over time and a
// summary, and exits 1 when a check fails (130 when interrupted). It builds
// nothing; every phase and loop is bounded in time and count.
//
//	make soak                      # 10 minutes
//	make soak SOAK_DURATION=2m SOAKFLAGS='-rate 100 -cache-ttl 30s'
//	go run ./tools/soak -kvproxy bin/kvproxy -duration 2m
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/tools/internal/harness"
)

// identityHeader is the X-IDENTITY-HEADER secret shared by the identity
// endpoint and kvproxy.
const identityHeader = "soak"

// requestTimeout bounds one request of the load.
const requestTimeout = 10 * time.Second

// options are the soak's flags.
type options struct {
	kvproxy       string
	duration      time.Duration
	rate          int
	interval      time.Duration
	conns         int
	lifetime      time.Duration
	refreshBefore time.Duration
	writes        float64
	cacheTTL      time.Duration
	logFile       string
}

func main() {
	var o options
	flag.StringVar(&o.kvproxy, "kvproxy", "bin/kvproxy", "the kvproxy binary (make build)")
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the load runs (at most 2h)")
	flag.IntVar(&o.rate, "rate", 200, "constant request rate, per second (open loop; 1 to 5000)")
	flag.DurationVar(&o.interval, "interval", 10*time.Second, "how often kvproxy is sampled (1s to 1m)")
	flag.IntVar(&o.conns, "conns", 32, "client connections, all opened before the run and used in turn (1 to 512)")
	flag.DurationVar(&o.lifetime, "token-lifetime", 2*time.Minute, "lifetime of the identity endpoint's tokens (30s to 1h)")
	flag.DurationVar(&o.refreshBefore, "refresh-before", time.Minute, "KVPROXY_REFRESH_BEFORE (kvproxy caps it at half the lifetime; at most 5m, azidentity's own cache window)")
	flag.Float64Var(&o.writes, "writes", 0.05, "share of requests that are writes (0 to 0.5)")
	flag.DurationVar(&o.cacheTTL, "cache-ttl", 0, "KVPROXY_CACHE_TTL: 0 leaves the secret cache off, so every read reaches the vault")
	flag.StringVar(&o.logFile, "log", "", "write kvproxy's log here (default: a temporary file, removed)")
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
	}
	os.Exit(code)
}

func (o options) validate() error {
	var problems []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	check(o.duration > 0 && o.duration <= 2*time.Hour, "-duration %v must be in (0, 2h]", o.duration)
	check(o.rate >= 1 && o.rate <= 5000, "-rate %d must be in [1, 5000]", o.rate)
	check(o.interval >= time.Second && o.interval <= time.Minute, "-interval %v must be in [1s, 1m]", o.interval)
	check(o.conns >= 1 && o.conns <= 512, "-conns %d must be in [1, 512]", o.conns)
	check(o.lifetime >= 30*time.Second && o.lifetime <= time.Hour, "-token-lifetime %v must be in [30s, 1h]", o.lifetime)
	check(o.refreshBefore > 0 && o.refreshBefore <= 5*time.Minute, "-refresh-before %v must be in (0, 5m]", o.refreshBefore)
	check(o.writes >= 0 && o.writes <= 0.5, "-writes %v must be in [0, 0.5]", o.writes)
	check(o.cacheTTL >= 0 && o.cacheTTL <= 24*time.Hour, "-cache-ttl %v must be in [0, 24h]", o.cacheTTL)
	if st, err := os.Stat(o.kvproxy); err != nil || st.IsDir() {
		problems = append(problems, fmt.Sprintf("-kvproxy %s: not a file (run make build)", o.kvproxy))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// secrets are what the load reads (and rewrites with the same values).
var secrets = map[string]string{
	"soak-db-password": "correct-horse-battery-staple",
	"soak-api-key":     "kv-soak-0f9c",
	"soak-conn-string": "Server=db.internal;Database=app;User Id=app;Password=" + strings.Repeat("p", 48),
	"soak-certificate": strings.Repeat("MIIBszCCAVmgAwIBAgIU", 12),
}

// run is the whole soak; it returns the exit code.
func run(ctx context.Context, o options) (int, error) {
	dir, err := os.MkdirTemp("", "kvproxy-soak-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	if o.logFile == "" {
		o.logFile = filepath.Join(dir, "kvproxy.log")
	}

	certs, err := azfake.NewTLS()
	if err != nil {
		return 1, err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := certs.WriteCAFile(caFile); err != nil {
		return 1, err
	}
	vault := azfake.NewVault(azfake.VaultOptions{})
	for name, value := range secrets {
		vault.SetSecret(name, value)
	}
	vaultURL, err := vault.Start(certs, "")
	if err != nil {
		return 1, err
	}
	defer vault.Close()
	ids := azfake.NewIdentityServer(azfake.IdentityOptions{Header: identityHeader, Lifetime: o.lifetime})
	idURL, err := ids.Start("")
	if err != nil {
		return 1, err
	}
	defer ids.Close()

	listen, err := harness.FreePort()
	if err != nil {
		return 1, err
	}
	adminPort, err := harness.FreePort()
	if err != nil {
		return 1, err
	}
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	up := harness.Upstream{VaultURL: vaultURL, IdentityURL: idURL, IdentityHeader: identityHeader, CAFile: caFile}
	// Only what the soak sets: nothing of this shell's KVPROXY_*, AZURE_*
	// or IDENTITY_* leaks in.
	extra := []string{"KVPROXY_REFRESH_BEFORE=" + o.refreshBefore.String()}
	if o.cacheTTL > 0 {
		extra = append(extra, "KVPROXY_CACHE_TTL="+o.cacheTTL.String())
	}
	env := up.Env([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, listen, adminPort, extra...)
	kv, err := startKVProxy(o.kvproxy, env, o.logFile)
	if err != nil {
		return 1, err
	}
	defer kv.stop(time.Second) // only when returning early; the end of the run stops it first
	if err := harness.WaitReady(admin+"/readyz", 30*time.Second); err != nil {
		return 1, fmt.Errorf("%w; its log:\n%s", err, tailLog(o.logFile, 20))
	}

	maxInflight := min(50_000, max(64, o.rate*int(requestTimeout/time.Second)+o.conns))
	d := newDriver(fmt.Sprintf("http://127.0.0.1:%d", listen), secrets, o.writes, o.conns, maxInflight, requestTimeout)
	d.warm()
	d.take() // the warm-up requests count, but their latencies are not the run's

	// The load stops at its end, on SIGINT or SIGTERM, or when kvproxy exits.
	loadCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-kv.exited:
			cancel(fmt.Errorf("kvproxy exited during the run: %v", kv.err))
		case <-loadCtx.Done():
		}
	}()
	fmt.Fprintf(os.Stderr, "soak: %d req/s for %v through kvproxy (pid %d), tokens living %v; a sample every %v\n",
		o.rate, o.duration, kv.cmd.Process.Pid, o.lifetime, o.interval)
	start := time.Now()
	n := int(float64(o.rate) * o.duration.Seconds())
	s := &sampler{d: d, pid: kv.cmd.Process.Pid, admin: admin, ids: ids, start: start, prevRequests: d.done.Load()}
	samples := []sample{s.take()}
	sampled := make(chan []sample)
	go func() { sampled <- s.loop(loadCtx, o.interval, int(o.duration/o.interval)+1) }()
	due := d.run(loadCtx, o.rate, n, start)
	elapsed := time.Since(start)
	cause := context.Cause(loadCtx)
	cancel(nil)
	samples = append(samples, <-sampled...)
	if time.Since(start)-samples[len(samples)-1].at >= time.Second {
		samples = append(samples, s.take())
	}
	fetches, span := ids.Requests(), time.Since(kv.started)
	counters := "unavailable (/metrics did not answer)"
	if retries, err := harness.MetricSum(admin, "kvproxy_upstream_retries_total"); err == nil {
		counters = "token acquisitions:"
		for _, result := range []string{"success", "unchanged", "error"} {
			n, _ := harness.MetricSum(admin, `kvproxy_token_acquisitions_total{result="`+result+`"}`)
			counters += fmt.Sprintf(" %.0f %s,", n, result)
		}
		counters += fmt.Sprintf(" upstream retries %.0f", retries)
	}
	// kvproxy's own clock tells a stall inside it (a request slow, its
	// round trip to the vault not) from one of the vault, which runs in
	// this process, or of the machine; the latency from when a request was
	// due cannot.
	slow := "kvproxy's timing unavailable"
	reqOver, reqAll, err1 := overBucket(admin, "kvproxy_request_duration_seconds", "0.1")
	upOver, upAll, err2 := overBucket(admin, "kvproxy_upstream_duration_seconds", "0.1")
	if err1 == nil && err2 == nil {
		slow = fmt.Sprintf("by kvproxy's clock %.0f of %.0f requests took over 100 ms, and %.0f of %.0f round trips to the vault", reqOver, reqAll, upOver, upAll)
	}
	stopErr := kv.stop(40 * time.Second)

	// The report.
	fmt.Printf("\nkvproxy soak, %s: %d req/s for %v (open loop, %d connections, %.0f%% writes, secret cache %s), tokens living %v refreshed %v before expiry\n\n",
		time.Now().UTC().Format("2006-01-02"), o.rate, o.duration, o.conns, o.writes*100, onOff(o.cacheTTL), o.lifetime, o.refreshBefore)
	writeTable(os.Stdout, samples)
	var failures []string
	verdict := func(ok bool, what, format string, args ...any) {
		mark := "ok"
		if !ok {
			mark = "FAIL"
			failures = append(failures, what)
		}
		fmt.Printf("%-18s %s  %s\n", what, fmt.Sprintf(format, args...), mark)
	}
	fmt.Println()
	total, failed := d.done.Load(), d.failed.Load()
	fmt.Printf("%-18s %d in %v (%d due, %d warm-up requests before), %.0f req/s\n", "requests", total, elapsed.Round(time.Millisecond), due, 3*o.conns, float64(total-int64(3*o.conns))/elapsed.Seconds())
	verdict(failed == 0, "errors", "%d", failed)
	for _, e := range d.errors() {
		fmt.Printf("%-18s   %s\n", "", e)
	}
	lo, hi := expectedFetches(span, o.lifetime, o.refreshBefore)
	verdict(fetches >= lo && fetches <= hi, "identity requests", "%d in %v since kvproxy started (expected %d to %d: one at start and one per %v refresh period, ±1)",
		fetches, span.Round(time.Second), lo, hi, refreshPeriod(o.lifetime, o.refreshBefore))
	warm := warmupOf(o.duration)
	gr, rss := judgeGrowth(samples, warm)
	if gr.judged {
		verdict(gr.ok(), "goroutines", "%.0f at warm-up end (%v), at most %.0f after (limit %.0f: +%d)%s", gr.base, warm, gr.peak, gr.limit, goroutineSlack, missing(gr))
		verdict(rss.ok(), "RSS", "%.1f MiB at warm-up end, at most %.1f MiB after (limit %.1f MiB: +%.0f%% or +%.0f MiB, the larger)", rss.base, rss.peak, rss.limit, rssSlackShare*100, rssSlackMiB)
	} else {
		fmt.Printf("%-18s not judged: the run ended before two samples past warm-up (%v)\n", "growth", warm)
	}
	var p50s, p99max []float64
	for _, x := range samples[1:] {
		p50s = append(p50s, x.p50)
		p99max = append(p99max, x.p99)
	}
	med, _ := percentiles(p50s)
	fmt.Printf("%-18s p50 %.2f ms (median of the samples'), p99 %.2f ms at worst (one sample's), from when each request was due\n", "latency", med, maxOf(p99max))
	fmt.Printf("%-18s %s\n", "", slow)
	if o.cacheTTL > 0 {
		fmt.Printf("%-18s %d reads answered from kvproxy's secret cache (X-Cache: HIT)\n", "cache", d.hits.Load())
	}
	fmt.Printf("%-18s %s\n", "kvproxy", counters)
	warns, errs := logLevels(o.logFile)
	fmt.Printf("%-18s %d warnings, %d errors logged\n", "kvproxy log", len(warns), len(errs))
	for _, l := range append(errs, warns...)[:min(maxErrorsShown, len(errs)+len(warns))] {
		fmt.Printf("%-18s   %.300s\n", "", l)
	}
	verdict(stopErr == nil, "kvproxy stop", "%s", stopDesc(stopErr))

	switch {
	case len(failures) > 0:
		fmt.Printf("\nFAIL: %s\n", strings.Join(failures, ", "))
		return 1, cause
	case cause != nil:
		fmt.Printf("\nINCOMPLETE: %v after %v\n", cause, elapsed.Round(time.Second))
		return 130, nil
	}
	fmt.Println("\nPASS")
	return 0, nil
}

// overBucket returns how many observations of the histogram name on
// kvproxy's /metrics exceeded its bucket le, and how many there were.
func overBucket(admin, name, le string) (over, all float64, err error) {
	all, err = harness.MetricSum(admin, name+`_bucket{le="+Inf"}`)
	if err != nil {
		return 0, 0, err
	}
	in, err := harness.MetricSum(admin, name+`_bucket{le="`+le+`"}`)
	return all - in, all, err
}

func onOff(ttl time.Duration) string {
	if ttl <= 0 {
		return "off"
	}
	return "TTL " + ttl.String()
}

func missing(g growth) string {
	if g.missing == 0 {
		return ""
	}
	return fmt.Sprintf("; %d samples without /metrics", g.missing)
}

func stopDesc(err error) string {
	if err != nil {
		return err.Error()
	}
	return "SIGTERM, exited 0"
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// sampler reads kvproxy's RSS and goroutines and the load's progress.
type sampler struct {
	d     *driver
	pid   int
	admin string
	ids   *azfake.IdentityServer
	start time.Time

	prevAt       time.Duration
	prevRequests int64
}

// take samples now.
func (s *sampler) take() sample {
	at := time.Since(s.start)
	x := sample{at: at, requests: s.d.done.Load(), errors: s.d.failed.Load(), fetches: s.ids.Requests()}
	x.p50, x.p99 = percentiles(s.d.take())
	if dt := (at - s.prevAt).Seconds(); dt > 0 {
		x.rps = float64(x.requests-s.prevRequests) / dt
	}
	s.prevAt, s.prevRequests = at, x.requests
	x.rssMiB = harness.StatusMiB([]int{s.pid}, "VmRSS")
	x.goroutines = -1
	if g, err := harness.MetricSum(s.admin, "go_goroutines"); err == nil {
		x.goroutines = int(g)
	}
	fmt.Fprintf(os.Stderr, "soak: %8v  %7d requests  %d errors  RSS %.1f MiB  %d goroutines  %d identity requests\n",
		at.Round(time.Second), x.requests, x.errors, x.rssMiB, x.goroutines, x.fetches)
	return x
}

// loop samples every interval, count times at most, until ctx ends.
func (s *sampler) loop(ctx context.Context, every time.Duration, count int) []sample {
	t := time.NewTicker(every)
	defer t.Stop()
	var out []sample
	for range count {
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
			out = append(out, s.take())
		}
	}
	return out
}

// kvproc is the kvproxy subprocess.
type kvproc struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}
	err     error // cmd.Wait's; read only after exited is closed
	log     *os.File
}

func startKVProxy(bin string, env []string, logFile string) (*kvproc, error) {
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group: a Ctrl-C in the terminal reaches the soak,
	// which stops kvproxy itself after the report's last sample.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	k := &kvproc{cmd: cmd, started: time.Now(), exited: make(chan struct{}), log: log}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	go func() {
		k.err = cmd.Wait()
		log.Close()
		close(k.exited)
	}()
	return k, nil
}

// stop sends SIGTERM and waits up to d for kvproxy to exit, then kills it.
// It returns nil when kvproxy exited 0 in time.
func (k *kvproc) stop(d time.Duration) error {
	select {
	case <-k.exited:
		return k.err
	default:
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
		return k.err
	case <-time.After(d):
		_ = k.cmd.Process.Kill()
		<-k.exited
		return fmt.Errorf("did not exit within %v of SIGTERM; killed", d)
	}
}

// logLevels returns kvproxy's logged warnings and errors (JSON lines).
func logLevels(path string) (warns, errs []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, []string{err.Error()}
	}
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(l, `"level":"WARN"`):
			warns = append(warns, l)
		case strings.Contains(l, `"level":"ERROR"`):
			errs = append(errs, l)
		}
	}
	return warns, errs
}

// tailLog returns the last n lines of the log file.
func tailLog(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
