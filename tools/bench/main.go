// Command bench measures kvproxy side by side with nginx and a direct
// client, in one run on this machine: a local TLS upstream (nginx) answers a
// 200-byte secret; wrk drives five paths in interleaved rounds — direct to
// the upstream over TLS, nginx proxying with a static Authorization header,
// the real kvproxy binary (policy, token, metrics, debug-level check all on),
// the same with the secret cache on, and nginx answering the same bytes from
// memory over plain HTTP (the ceiling for any cache) — and an open-loop
// client drives direct, nginx and both kvproxies at a constant rate at once,
// for the latency each proxy adds. It prints req/s, p50/p99, CPU µs per
// request and peak RSS per path and the ratios to nginx. Every phase is
// bounded in time.
//
//	make bench-e2e            # installs wrk and nginx from Debian when missing
//	go run ./tools/bench -kvproxy bin/kvproxy -rounds 3 -d 10s
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvproxy/kvproxy/internal/azfake"
	"github.com/kvproxy/kvproxy/tools/internal/harness"
)

type result struct {
	rps, p50, p99 float64 // req/s, ms, ms
	cpuUS         float64 // proxy CPU µs per request
	rssMiB        float64 // proxy peak RSS
}

func main() {
	kv := flag.String("kvproxy", "bin/kvproxy", "the kvproxy binary")
	rounds := flag.Int("rounds", 3, "interleaved rounds (medians are reported)")
	dur := flag.Duration("d", 10*time.Second, "wrk duration per path and round (at most 1m)")
	conns := flag.Int("c", 64, "wrk connections")
	rate := flag.Int("rate", 1000, "constant request rate of the latency run (per second)")
	latDur := flag.Duration("latency-d", 10*time.Second, "duration of each constant-rate run (at most 1m)")
	flag.Parse()
	if *dur <= 0 || *dur > time.Minute || *latDur <= 0 || *latDur > time.Minute || *rounds < 1 || *rounds > 9 {
		fatal("bench: -d and -latency-d must be in (0, 1m], -rounds in [1, 9]")
	}
	for _, tool := range []string{"wrk", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			fatal("bench: %s not found: run make bench-e2e, which installs it from Debian", tool)
		}
	}
	dir, err := os.MkdirTemp("", "kvproxy-bench-")
	check(err)
	defer os.RemoveAll(dir)
	caFile, certFile, keyFile := writeCerts(dir)

	upPort, staticPort, nxPort, kvPort, kvAdmin := freePort(), freePort(), freePort(), freePort(), freePort()
	body := `{"value":"` + strings.Repeat("s", 120) + `","id":"https://127.0.0.1/secrets/bench/0123456789abcdef","attributes":{"enabled":true}}`
	body = body[:200]
	upstream := startNginx(dir, "upstream", fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        keepalive_requests 1000000;
        location / { default_type application/json; return 200 '%s'; }
    }
    server {
        listen 127.0.0.1:%d;
        keepalive_requests 1000000;
        location / { default_type application/json; return 200 '%s'; }
    }`, upPort, certFile, keyFile, body, staticPort, body))
	defer upstream.stop()
	nginx := startNginx(dir, "proxy", fmt.Sprintf(`
    upstream vault { server 127.0.0.1:%d; keepalive 128; }
    server {
        listen 127.0.0.1:%d;
        keepalive_requests 1000000;
        location / {
            proxy_pass https://vault;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer static-token-for-the-benchmark";
            proxy_ssl_session_reuse on;
            proxy_ssl_trusted_certificate %s;
            proxy_ssl_verify on;
            proxy_ssl_name 127.0.0.1;
        }
    }`, upPort, nxPort, caFile))
	defer nginx.stop()

	ids := azfake.NewIdentityServer(azfake.IdentityOptions{Header: "bench"})
	idURL, err := ids.Start("127.0.0.1:0")
	check(err)
	defer ids.Close()
	up := harness.Upstream{VaultURL: fmt.Sprintf("https://127.0.0.1:%d", upPort), IdentityURL: idURL, IdentityHeader: "bench", CAFile: caFile}
	kvcPort, kvcAdmin := freePort(), freePort()
	kvc := exec.Command(*kv)
	kvc.Env = up.Env(os.Environ(), kvcPort, kvcAdmin, "KVPROXY_CACHE_TTL=1h")
	check(kvc.Start())
	defer func() { kvc.Process.Signal(syscall.SIGTERM); kvc.Wait() }() //nolint:errcheck
	waitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", kvcAdmin))
	kvp := exec.Command(*kv)
	kvp.Env = up.Env(os.Environ(), kvPort, kvAdmin)
	kvp.Stderr = nil
	check(kvp.Start())
	defer func() { kvp.Process.Signal(syscall.SIGTERM); kvp.Wait() }() //nolint:errcheck
	waitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", kvAdmin))

	path := "/secrets/bench?api-version=7.5"
	targets := []struct {
		name, url string
		pids      func() []int
	}{
		{"direct", fmt.Sprintf("https://127.0.0.1:%d%s", upPort, path), func() []int { return nil }},
		{"nginx", fmt.Sprintf("http://127.0.0.1:%d%s", nxPort, path), nginx.workers},
		{"kvproxy", fmt.Sprintf("http://127.0.0.1:%d%s", kvPort, path), func() []int { return []int{kvp.Process.Pid} }},
		{"kvproxy-cached", fmt.Sprintf("http://127.0.0.1:%d%s", kvcPort, path), func() []int { return []int{kvc.Process.Pid} }},
		// The ceiling for any cache: the same bytes from memory over plain
		// HTTP, by a server doing no other work (nginx's return directive).
		{"nginx-static", fmt.Sprintf("http://127.0.0.1:%d%s", staticPort, path), upstream.workers},
	}
	latTargets := targets[:4] // the constant-rate run: direct, nginx, kvproxy, kvproxy-cached
	// Idle RSS in real mode: after a few hundred requests, before any load.
	for range 300 {
		get(targets[2].url)
	}
	time.Sleep(time.Second)
	kvPids := []int{kvp.Process.Pid}
	idle, idleAnon, idleFile := harness.StatusMiB(kvPids, "VmRSS"), harness.StatusMiB(kvPids, "RssAnon"), harness.StatusMiB(kvPids, "RssFile")
	// Warm up every path, and let kvproxy hold its connections.
	for _, t := range targets {
		wrk(t.url, *conns, 2*time.Second)
	}

	results := map[string][]result{}
	for r := 1; r <= *rounds; r++ {
		for _, t := range targets {
			pids := t.pids()
			cpu0 := cpuTicks(pids)
			res := wrk(t.url, *conns, *dur)
			ticks := cpuTicks(pids) - cpu0
			if len(pids) > 0 && res.rps > 0 {
				res.cpuUS = float64(ticks) * 1e6 / 100 / (res.rps * dur.Seconds()) // 100 ticks per second
				res.rssMiB = harness.StatusMiB(pids, "VmHWM")
			}
			results[t.name] = append(results[t.name], res)
			fmt.Fprintf(os.Stderr, "round %d %-8s %9.0f req/s  p50 %.2f ms  p99 %.2f ms  cpu %.1f µs/req\n", r, t.name, res.rps, res.p50, res.p99, res.cpuUS)
		}
	}
	// The constant-rate rounds: every path at once, p50 and p99 per path and
	// round; the added latency is a path's minus direct's in the same round.
	var latURLs []string
	for _, t := range latTargets {
		latURLs = append(latURLs, t.url)
	}
	lat := map[string][]latency{}
	for r := 1; r <= *rounds; r++ {
		ls := constantRate(latURLs, caFile, *rate, *latDur)
		for k, t := range latTargets {
			l := latency{p50: ls[k][0], p99: ls[k][1], added50: ls[k][0] - ls[0][0], added99: ls[k][1] - ls[0][1]}
			lat[t.name] = append(lat[t.name], l)
			fmt.Fprintf(os.Stderr, "latency round %d %-14s p50 %.3f ms  p99 %.3f ms  added p50 %.3f  p99 %.3f\n", r, t.name, l.p50, l.p99, l.added50, l.added99)
		}
	}

	fmt.Printf("\nkvproxy side by side (%s; wrk -c %d, %s × %d interleaved rounds, medians; upstream nginx over TLS answering %d bytes)\n\n",
		time.Now().UTC().Format("2006-01-02"), *conns, *dur, *rounds, len(body))
	fmt.Println("| path | req/s | vs nginx | p50 ms | p99 ms | proxy CPU µs/req | CPU vs nginx | peak RSS MiB |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	ng := median(results["nginx"])
	for _, t := range targets {
		m := median(results[t.name])
		cpu, cpuRatio, rss := "–", "–", "–"
		if m.cpuUS > 0 {
			cpu = fmt.Sprintf("%.1f", m.cpuUS)
			cpuRatio = fmt.Sprintf("%.2f×", m.cpuUS/ng.cpuUS)
			rss = fmt.Sprintf("%.1f", m.rssMiB)
		}
		fmt.Printf("| %s | %.0f | %.2f× | %.2f | %.2f | %s | %s | %s |\n", t.name, m.rps, m.rps/ng.rps, m.p50, m.p99, cpu, cpuRatio, rss)
	}
	fmt.Printf("\nkvproxy idle RSS after 300 requests: %.1f MiB (anonymous %.1f: heap, stacks, runtime; file-backed %.1f: the binary's pages, shared and clean)\n", idle, idleAnon, idleFile)
	fmt.Printf("\nconstant %d req/s on every path at once (interleaved slots), %s × %d rounds, medians; each request timed from when it was due:\n\n", *rate, *latDur, *rounds)
	fmt.Println("| path | p50 ms | p99 ms | added p50 ms | added p99 ms |")
	fmt.Println("|---|---|---|---|---|")
	for _, t := range latTargets {
		ls := lat[t.name]
		added := [2]string{"–", "–"}
		if t.name == "nginx" || t.name == "kvproxy" {
			added = [2]string{fmt.Sprintf("%.3f", med(ls, latency.a50)), fmt.Sprintf("%.3f", med(ls, latency.a99))}
		}
		fmt.Printf("| %s | %.3f | %.3f | %s | %s |\n", t.name, med(ls, latency.q50), med(ls, latency.q99), added[0], added[1])
	}
	if dm, cm, sm := median(results["direct"]), median(results["kvproxy-cached"]), median(results["nginx-static"]); dm.rps > 0 {
		fmt.Printf("\ncached reads through kvproxy / direct TLS reads: %.2f× throughput (p50 %.2f ms, p99 %.2f ms)\n", cm.rps/dm.rps, cm.p50, cm.p99)
		fmt.Printf("the ceiling, nginx-static / direct: %.2f×; kvproxy-cached / nginx-static: %.2f×\n", sm.rps/dm.rps, cm.rps/sm.rps)
	}
	if kl, nl := med(lat["kvproxy"], latency.a99), med(lat["nginx"], latency.a99); nl > 0 {
		fmt.Printf("\nkvproxy added p99 / nginx added p99: %.2f×\n", kl/nl)
	}
}

var (
	rpsRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	latRe = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)
)

// wrk runs wrk and reads its req/s and latency percentiles.
func wrk(url string, conns int, d time.Duration) result {
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()))+"s", "--latency",
		"-H", "Metadata: true", url).CombinedOutput()
	if err != nil {
		fatal("wrk %s: %v\n%s", url, err, out)
	}
	var r result
	if m := rpsRe.FindSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	for _, m := range latRe.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		switch string(m[3]) {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if string(m[1]) == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if bytes.Contains(out, []byte("Non-2xx")) {
		fatal("wrk %s: non-2xx answers:\n%s", url, out)
	}
	return r
}

// constantRate drives every url at rate requests per second at once, for d
// (open loop: a request is due at its slot whether or not earlier ones
// returned), and returns each url's p50 and p99 in ms of its requests' time
// from when they were due. The urls' slots interleave (url k's i-th request
// is due k/len(urls) of an interval after the i-th of url 0), so a pause of
// the machine — these are shared VMs — lands on every path alike instead of
// on whichever path happened to run at the time.
func constantRate(urls []string, caFile string, rate int, d time.Duration) [][2]float64 {
	pem, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	type slot struct {
		i   int
		due time.Time
	}
	lat := make([][]float64, len(urls))
	queues := make([]chan slot, len(urls))
	failed := make([]atomic.Int64, len(urls))
	clients := make([]*fasthttp.Client, len(urls))
	var wg sync.WaitGroup
	for k, url := range urls {
		lat[k] = make([]float64, n)
		queues[k] = make(chan slot, n)
		c := &fasthttp.Client{TLSConfig: &tls.Config{RootCAs: pool}, MaxConnsPerHost: 512, ReadTimeout: 10 * time.Second}
		clients[k] = c
		do := func() bool {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(url)
			req.Header.Set("Metadata", "true")
			return c.DoTimeout(req, resp, 10*time.Second) == nil && resp.StatusCode() == 200
		}
		// Warm the client's pool first, so no measured request pays for a
		// new connection (and, direct, a TLS handshake) the others do not.
		var warm sync.WaitGroup
		for range 64 {
			warm.Go(func() {
				for range 20 {
					do()
				}
			})
		}
		warm.Wait()
		// 64 workers per url, waiting: a due request is handed over, not
		// started as a new goroutine. A request that finds every worker
		// busy waits in the queue, and its wait counts.
		for range 64 {
			wg.Go(func() {
				for s := range queues[k] {
					if !do() {
						failed[k].Add(1)
						continue
					}
					lat[k][s.i] = float64(time.Since(s.due).Microseconds()) / 1000
				}
			})
		}
	}
	// The dispatcher sleeps on an OS thread of its own, with the kernel's
	// high-resolution timer and a timer slack of 1 ns. time.Sleep will not
	// do here: the Go runtime waits for timers in whole milliseconds (its
	// netpoller rounds a wait under 1 ms up to 1 ms), an error as large as
	// the latencies measured.
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		runtime.LockOSThread()                          // never unlocked: the thread, with its slack, ends with the goroutine
		syscall.RawSyscall(syscall.SYS_PRCTL, 29, 1, 0) //nolint:errcheck // PR_SET_TIMERSLACK to 1 ns
		start := time.Now().Add(50 * time.Millisecond)
		for i := range n {
			for k := range urls {
				due := start.Add(time.Duration(i)*interval + time.Duration(k)*interval/time.Duration(len(urls)))
				for left := time.Until(due); left > 0; left = time.Until(due) {
					ts := syscall.NsecToTimespec(int64(left))
					syscall.Nanosleep(&ts, nil) //nolint:errcheck // EINTR: the loop sleeps again
				}
				queues[k] <- slot{i, due}
			}
		}
	}()
	<-dispatched
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	for k, c := range clients {
		c.CloseIdleConnections() // the next round starts from its own
		if f := failed[k].Load(); f > 0 {
			fatal("bench: %d of %d constant-rate requests to %s failed", f, n, urls[k])
		}
	}
	out := make([][2]float64, len(urls))
	for k, l := range lat {
		slices.Sort(l)
		out[k] = [2]float64{l[n/2], l[n*99/100]}
	}
	return out
}

// latency is one path's constant-rate round, in ms: its p50 and p99, and
// how much each exceeds direct's in the same round.
type latency struct{ p50, p99, added50, added99 float64 }

func (l latency) q50() float64 { return l.p50 }
func (l latency) q99() float64 { return l.p99 }
func (l latency) a50() float64 { return l.added50 }
func (l latency) a99() float64 { return l.added99 }

// med is the median of f over xs (the upper one of an even count).
func med[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func median(rs []result) result {
	return result{
		rps: med(rs, func(r result) float64 { return r.rps }), p50: med(rs, func(r result) float64 { return r.p50 }),
		p99: med(rs, func(r result) float64 { return r.p99 }), cpuUS: med(rs, func(r result) float64 { return r.cpuUS }),
		rssMiB: med(rs, func(r result) float64 { return r.rssMiB }),
	}
}

// cpuTicks sums utime+stime of the processes, in clock ticks.
func cpuTicks(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += ut + st
	}
	return total
}

type nginxProc struct {
	cmd *exec.Cmd
}

// startNginx runs nginx in the foreground with servers as its http block.
func startNginx(dir, name, servers string) *nginxProc {
	conf := filepath.Join(dir, name+".conf")
	prefix := filepath.Join(dir, name)
	check(os.MkdirAll(prefix, 0o755))
	check(os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
master_process on;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
%[2]s
}
`, prefix, servers)), 0o644))
	cmd := exec.Command("nginx", "-p", prefix, "-c", conf)
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	time.Sleep(300 * time.Millisecond) // nginx has no readiness signal; it binds at once
	return &nginxProc{cmd: cmd}
}

func (n *nginxProc) stop() {
	n.cmd.Process.Signal(syscall.SIGQUIT) //nolint:errcheck
	n.cmd.Wait()                          //nolint:errcheck
}

// workers lists the master and its worker processes.
func (n *nginxProc) workers() []int {
	pids := []int{n.cmd.Process.Pid}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if ppid, _ := strconv.Atoi(f[1]); ppid == n.cmd.Process.Pid {
			pids = append(pids, pid)
		}
	}
	return pids
}

func get(url string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Metadata", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fatal("bench: %v", err)
	}
	resp.Body.Close()
}

func waitReady(url string) {
	if err := harness.WaitReady(url, 30*time.Second); err != nil {
		fatal("bench: %v", err)
	}
}

func freePort() int {
	port, err := harness.FreePort()
	check(err)
	return port
}

// writeCerts writes a CA and a leaf for 127.0.0.1 as PEM files.
func writeCerts(dir string) (ca, cert, key string) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	check(err)
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	check(err)
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	check(err)
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	check(os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644))
	check(os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o644))
	check(os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return ca, cert, key
}

func check(err error) {
	if err != nil {
		fatal("bench: %v", err)
	}
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}
