package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

var epoch = time.Unix(1700000000, 0).UTC()

func TestArchivesAreDeterministic(t *testing.T) {
	members := []member{{name: "kvproxy", data: []byte("bin"), exec: true}, {name: "LICENSE", data: []byte("text")}}
	for _, kind := range []string{"tar.gz", "zip"} {
		t.Run(kind, func(t *testing.T) {
			write := func(m []member) []byte {
				var buf bytes.Buffer
				var err error
				if kind == "zip" {
					err = writeZip(&buf, "kvproxy_v1_x", m, epoch)
				} else {
					err = writeTarGz(&buf, "kvproxy_v1_x", m, epoch)
				}
				if err != nil {
					t.Fatal(err)
				}
				return buf.Bytes()
			}
			a := write(members)
			// Order of the arguments does not matter: entries are sorted.
			if b := write([]member{members[1], members[0]}); !bytes.Equal(a, b) {
				t.Fatal("the same files gave different archives")
			}
			want := []string{"kvproxy_v1_x/", "kvproxy_v1_x/LICENSE", "kvproxy_v1_x/kvproxy"}
			var got []string
			if kind == "zip" {
				zr, err := zip.NewReader(bytes.NewReader(a), int64(len(a)))
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range zr.File {
					got = append(got, f.Name)
					if !f.Modified.Equal(epoch) {
						t.Errorf("%s modified %v", f.Name, f.Modified)
					}
					if f.Name == "kvproxy_v1_x/kvproxy" && f.Mode().Perm() != 0o755 {
						t.Errorf("kvproxy mode %v", f.Mode())
					}
				}
			} else {
				zr, err := gzip.NewReader(bytes.NewReader(a))
				if err != nil {
					t.Fatal(err)
				}
				if !zr.ModTime.IsZero() || zr.Name != "" {
					t.Errorf("gzip header carries %q %v", zr.Name, zr.ModTime)
				}
				tr := tar.NewReader(zr)
				for {
					h, err := tr.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, h.Name)
					if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || !h.ModTime.Equal(epoch) {
						t.Errorf("%s: %d:%d %q %v", h.Name, h.Uid, h.Gid, h.Uname, h.ModTime)
					}
				}
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("entries %q, want %q", got, want)
			}
		})
	}
}

func TestChecksums(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"b.zip": "b", "a.tar.gz": "a"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "SHA256SUMS")
	if err := run([]string{"checksums", "-o", out, filepath.Join(dir, "b.zip"), filepath.Join(dir, "a.tar.gz")}, io.Discard); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	want := "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb  a.tar.gz\n" +
		"3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d  b.zip\n"
	if string(got) != want {
		t.Errorf("SHA256SUMS:\n%s\nwant:\n%s", got, want)
	}
}

func TestChartPackage(t *testing.T) {
	out := t.TempDir()
	p1, err := packageChart("../../charts/kvproxy", "v1.2.3", "1700000000", out)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p1) != "kvproxy-1.2.3.tgz" {
		t.Errorf("wrote %s", p1)
	}
	first, _ := os.ReadFile(p1)
	if _, err := packageChart("../../charts/kvproxy", "v1.2.3", "1700000000", out); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(p1)
	if !bytes.Equal(first, second) {
		t.Error("packaging the chart twice gave different archives")
	}
	c, err := loader.Load(p1)
	if err != nil {
		t.Fatal(err)
	}
	if c.Metadata.Version != "1.2.3" || c.Metadata.AppVersion != "v1.2.3" {
		t.Errorf("packaged chart version %q appVersion %q", c.Metadata.Version, c.Metadata.AppVersion)
	}
	if len(c.Templates) == 0 || c.Schema == nil {
		t.Error("packaged chart lost its templates or schema")
	}
	if _, err := packageChart("../../charts/kvproxy", "1.2.3", "0", out); err == nil {
		t.Error("a version without v was accepted")
	}
}
