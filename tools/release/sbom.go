package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
)

// runSBOMImage writes the image's CycloneDX SBOM from the SBOMs of the
// binaries it holds (made by cyclonedx-gomod from each binary's module
// graph) and the CA bundle it ships. The image is the BOM's subject; each
// binary is a component with its modules nested under it, their bom-refs
// prefixed with the platform so they stay unique.
func runSBOMImage(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("release sbom-image", flag.ContinueOnError)
	image := fs.String("image", "", "image reference REPO:TAG (required)")
	digest := fs.String("digest", "", "digest of the image index, sha256:… (required)")
	caBundle := fs.String("ca-bundle", "", "the CA bundle the image ships (required)")
	caVersion := fs.String("ca-version", "", "Debian ca-certificates version of the bundle, when known")
	out := fs.String("o", "", "SBOM to write (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *image == "" || *digest == "" || *caBundle == "" || *out == "" || fs.NArg() == 0 {
		return fmt.Errorf("-image, -digest, -ca-bundle, -o and at least one binary SBOM are required")
	}
	repo, tag, ok := strings.Cut(*image, ":")
	if !ok || strings.Contains(tag, "/") {
		return fmt.Errorf("-image %q: want REPO:TAG", *image)
	}
	ca, err := os.ReadFile(*caBundle)
	if err != nil {
		return err
	}
	caSum := sha256.Sum256(ca)
	caComp := map[string]any{
		"type": "data", "bom-ref": "ca-certificates", "name": "ca-certificates",
		"description": "CA bundle at /etc/ssl/certs/ca-certificates.crt",
		"hashes":      []any{map[string]any{"alg": "SHA-256", "content": hex.EncodeToString(caSum[:])}},
		"data":        []any{map[string]any{"type": "configuration", "name": "/etc/ssl/certs/ca-certificates.crt"}},
	}
	if *caVersion != "" {
		caComp["type"] = "library"
		delete(caComp, "data")
		caComp["version"] = *caVersion
		caComp["purl"] = "pkg:deb/debian/ca-certificates@" + url.PathEscape(*caVersion) + "?arch=all"
	}
	imageRef := "pkg:oci/" + repo[strings.LastIndex(repo, "/")+1:] + "@" + url.PathEscape(*digest) +
		"?repository_url=" + url.QueryEscape(repo) + "&tag=" + url.QueryEscape(tag)

	components := []any{}
	dependsOn := []any{}
	deps := []any{}
	var tools any
	for _, p := range fs.Args() {
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var bom map[string]any
		if err := json.Unmarshal(raw, &bom); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		meta, _ := bom["metadata"].(map[string]any)
		app, _ := meta["component"].(map[string]any)
		if app == nil {
			return fmt.Errorf("%s has no metadata.component", p)
		}
		if tools == nil {
			tools = meta["tools"]
		}
		prefix := platformOf(app) + ":"
		app = prefixRefs(app, prefix).(map[string]any)
		if c, ok := bom["components"].([]any); ok {
			app["components"] = prefixRefs(c, prefix)
		}
		components = append(components, app)
		dependsOn = append(dependsOn, app["bom-ref"])
		if d, ok := bom["dependencies"].([]any); ok {
			deps = append(deps, prefixRefs(d, prefix).([]any)...)
		}
	}
	components = append(components, caComp)
	dependsOn = append(dependsOn, "ca-certificates")
	deps = append([]any{map[string]any{"ref": imageRef, "dependsOn": dependsOn}}, deps...)

	bom := map[string]any{
		"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
		"metadata": map[string]any{
			"tools": tools,
			"component": map[string]any{
				"type": "container", "bom-ref": imageRef, "name": repo, "version": tag, "purl": imageRef,
				"hashes": []any{map[string]any{"alg": "SHA-256", "content": strings.TrimPrefix(*digest, "sha256:")}},
			},
		},
		"components":   components,
		"dependencies": deps,
	}
	data, err := json.MarshalIndent(bom, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", *out)
	return nil
}

// platformOf reads goos/goarch from a cyclonedx-gomod application purl.
func platformOf(app map[string]any) string {
	purl, _ := app["purl"].(string)
	if _, q, ok := strings.Cut(purl, "?"); ok {
		q, _, _ = strings.Cut(q, "#")
		if v, err := url.ParseQuery(q); err == nil && v.Get("goos") != "" {
			return v.Get("goos") + "/" + v.Get("goarch")
		}
	}
	return "unknown"
}

// prefixRefs returns v with every bom-ref, ref and dependsOn entry prefixed.
func prefixRefs(v any, prefix string) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			switch s, isString := e.(string); {
			case isString && (k == "bom-ref" || k == "ref"):
				m[k] = prefix + s
			case k == "dependsOn":
				refs := []any{}
				list, _ := e.([]any)
				for _, r := range list {
					if s, ok := r.(string); ok {
						refs = append(refs, prefix+s)
					}
				}
				m[k] = refs
			default:
				m[k] = prefixRefs(e, prefix)
			}
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = prefixRefs(e, prefix)
		}
		return out
	}
	return v
}
