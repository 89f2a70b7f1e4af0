package accesspolicy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

const (
	allowDB    = "rules: [{subjects: [system:serviceaccount:apps:web], paths: ['/secrets/db-*']}]\n"
	allowOther = "rules: [{subjects: [system:serviceaccount:apps:web], paths: ['/secrets/other']}]\n"
	web        = "system:serviceaccount:apps:web"
)

func write(t *testing.T, name, s string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// events records the watcher's callbacks.
type events struct {
	mu      sync.Mutex
	reloads int
	errs    []error
}

func (e *events) opts(interval time.Duration) WatcherOptions {
	return WatcherOptions{Interval: interval,
		OnReload: func(*Policy) { e.mu.Lock(); e.reloads++; e.mu.Unlock() },
		OnError:  func(err error) { e.mu.Lock(); e.errs = append(e.errs, err); e.mu.Unlock() }}
}

func (e *events) get() (int, []error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reloads, append([]error(nil), e.errs...)
}

func TestNewWatcherRefusesInvalid(t *testing.T) {
	name := filepath.Join(t.TempDir(), "policy.yaml")
	write(t, name, "rules: [{subjects: [nobody], paths: [/s]}]")
	_, err := NewWatcher(name, WatcherOptions{})
	if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "rule 0") {
		t.Errorf("err = %v, want the file and the rule named", err)
	}
	if _, err := NewWatcher(filepath.Join(t.TempDir(), "missing"), WatcherOptions{}); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := Load(name); err == nil {
		t.Error("Load accepted an invalid file")
	}
}

func TestWatcherCheck(t *testing.T) {
	name := filepath.Join(t.TempDir(), "policy.yaml")
	write(t, name, allowDB)
	var ev events
	w, err := NewWatcher(name, ev.opts(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	allowed := func(p string) bool { return w.Policy().Allow(web, "GET", p).Allowed }
	if !allowed("/secrets/db-x") || allowed("/secrets/other") {
		t.Fatal("initial policy not in effect")
	}
	if changed, err := w.Check(); changed || err != nil {
		t.Errorf("unchanged file: changed %v err %v", changed, err)
	}

	write(t, name, allowOther)
	if changed, err := w.Check(); !changed || err != nil {
		t.Fatalf("changed file: changed %v err %v", changed, err)
	}
	if allowed("/secrets/db-x") || !allowed("/secrets/other") {
		t.Error("reloaded policy not in effect")
	}

	// A bad reload keeps the previous policy and is reported once.
	write(t, name, "rules: [{subjects: [system:serviceaccount:apps:web], paths: ['/secrets/[']}]")
	if changed, err := w.Check(); changed || err == nil || !strings.Contains(err.Error(), "rule 0: paths[0]") {
		t.Errorf("bad reload: changed %v err %v", changed, err)
	}
	if _, err := w.Check(); err == nil {
		t.Error("a second look at the bad file reports no error")
	}
	if !allowed("/secrets/other") {
		t.Error("the previous policy was dropped on a bad reload")
	}
	// A vanished file (a ConfigMap update in progress) keeps the policy too.
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	w.Check()
	w.Check()
	if !allowed("/secrets/other") {
		t.Error("the previous policy was dropped when the file vanished")
	}
	write(t, name, allowDB)
	if changed, err := w.Check(); !changed || err != nil {
		t.Errorf("fixed file: changed %v err %v", changed, err)
	}
	reloads, errs := ev.get()
	if reloads != 2 || len(errs) != 2 {
		t.Errorf("%d reloads and errors %v; want 2 reloads, the bad file and the missing file reported once each", reloads, errs)
	}
}

// TestWatcherRun: Run looks at the file every interval and stops with its
// context (fake time: synctest).
func TestWatcherRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		name := filepath.Join(t.TempDir(), "policy.yaml")
		write(t, name, allowDB)
		var ev events
		w, err := NewWatcher(name, ev.opts(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { w.Run(ctx); close(done) }()

		write(t, name, allowOther)
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if w.Policy().Allow(web, "GET", "/secrets/other").Allowed {
			t.Error("reloaded before the interval passed")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if !w.Policy().Allow(web, "GET", "/secrets/other").Allowed {
			t.Error("not reloaded after the interval")
		}
		cancel()
		<-done
		if reloads, _ := ev.get(); reloads != 1 {
			t.Errorf("%d reloads", reloads)
		}
	})
}
