package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// member is one file of an archive: its name inside the archive's top
// directory, its contents and whether it is executable.
type member struct {
	name string
	data []byte
	exec bool
}

func runArchive(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("release archive", flag.ContinueOnError)
	out := fs.String("o", "", "archive to write: NAME.tar.gz or NAME.zip; NAME is also its top directory")
	mtime := fs.String("mtime", "0", "file times: Unix seconds (SOURCE_DATE_EPOCH)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t, err := parseEpoch(*mtime)
	if err != nil {
		return err
	}
	var members []member
	for _, a := range fs.Args() {
		name, src, ok := strings.Cut(a, "=")
		if !ok || name == "" || src == "" {
			return fmt.Errorf("%q: want NAME=PATH", a)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		fi, err := os.Stat(src)
		if err != nil {
			return err
		}
		members = append(members, member{name: name, data: data, exec: fi.Mode()&0o111 != 0})
	}
	var buf bytes.Buffer
	base := path.Base(*out)
	switch {
	case strings.HasSuffix(base, ".tar.gz"):
		err = writeTarGz(&buf, strings.TrimSuffix(base, ".tar.gz"), members, t)
	case strings.HasSuffix(base, ".zip"):
		err = writeZip(&buf, strings.TrimSuffix(base, ".zip"), members, t)
	default:
		return fmt.Errorf("-o %q: want a .tar.gz or .zip name", *out)
	}
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", *out)
	return nil
}

func sorted(members []member) []member {
	m := slices.Clone(members)
	slices.SortFunc(m, func(a, b member) int { return strings.Compare(a.name, b.name) })
	return m
}

func mode(m member) int64 {
	if m.exec {
		return 0o755
	}
	return 0o644
}

// writeTarGz writes members under top/, sorted, owned by 0:0 with no user
// or group names, at mtime; the gzip header carries no name or time.
func writeTarGz(w io.Writer, top string, members []member, mtime time.Time) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: top + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
		return err
	}
	for _, m := range sorted(members) {
		h := &tar.Header{Name: top + "/" + m.name, Typeflag: tar.TypeReg, Mode: mode(m), Size: int64(len(m.data)), ModTime: mtime, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(m.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// writeZip writes members under top/, sorted, deflated, at mtime (zip
// stores local time to 2 s; the extended timestamp field is left out).
func writeZip(w io.Writer, top string, members []member, mtime time.Time) error {
	zw := zip.NewWriter(w)
	dh := &zip.FileHeader{Name: top + "/", Method: zip.Store, Modified: mtime}
	dh.SetMode(0o755 | os.ModeDir)
	if _, err := zw.CreateHeader(dh); err != nil {
		return err
	}
	for _, m := range sorted(members) {
		h := &zip.FileHeader{Name: top + "/" + m.name, Method: zip.Deflate, Modified: mtime}
		h.SetMode(os.FileMode(mode(m)))
		f, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		if _, err := f.Write(m.data); err != nil {
			return err
		}
	}
	return zw.Close()
}
