// Package accesspolicy decides which client of kvproxy's shared service may
// send which request to the vault.
//
// A policy file (YAML; JSON is YAML too) lists rules:
//
//	rules:
//	  - subjects: ["system:serviceaccount:apps:web", "system:serviceaccount:batch:*"]
//	    methods: [GET]                       # default: [GET, HEAD]
//	    paths: ["/secrets/db-*", "/secrets/app-config"]
//
// A request is allowed when one rule names its subject, its method and its
// path; everything else is denied. A subject is exact, or
// `system:serviceaccount:<namespace>:*` for every ServiceAccount of a
// namespace. A path pattern uses [path.Match] syntax on the request path
// (`*` and `?` stay within one segment) and also covers every path below
// what it matches: `/secrets/db-*` allows `/secrets/db-password` and
// `/secrets/db-password/<version>`, not `/secrets/dbx`.
//
// Matching is case-insensitive, as Key Vault's object names are. A request
// path is matched as the vault will read it: percent-escapes are decoded
// once, and a path that is not clean is denied whatever the rules say: one
// with a `.` or `..` segment, an empty segment (`//`), an escaped `/` or
// `\` (`%2F`, `%5C`), a control byte, or no leading `/`. The query is not
// part of the path.
//
// [Parse] refuses a file with any mistake (an unknown key, an empty list, a
// bad pattern, a method Key Vault does not use), naming the rule and the
// field. A [Watcher] re-reads the file when its content changes and keeps
// the previous policy when the new one is invalid.
package accesspolicy
