package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// runChecksums writes SHA256SUMS in the format `sha256sum -c` reads: one
// "HEX  NAME" line per file, sorted by name, names relative to the file's
// directory.
func runChecksums(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("release checksums", flag.ContinueOnError)
	out := fs.String("o", "SHA256SUMS", "file to write; the files listed must be in its directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir := filepath.Dir(*out)
	var lines []string
	for _, f := range fs.Args() {
		if filepath.Dir(f) != dir {
			return fmt.Errorf("%s is not in %s", f, dir)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		lines = append(lines, hex.EncodeToString(sum[:])+"  "+filepath.Base(f)+"\n")
	}
	slices.SortFunc(lines, func(a, b string) int { return strings.Compare(a[66:], b[66:]) })
	if err := os.WriteFile(*out, []byte(strings.Join(lines, "")), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%d files)\n", *out, len(lines))
	return nil
}
