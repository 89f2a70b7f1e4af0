package diagnose

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kvproxy/kvproxy/kvwire"
)

// Character sets of values that may reach a detail or a fix.
const (
	idChars     = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"
	actionChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./"
	scopeChars  = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./()"
	urlChars    = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:%?=&~+"
)

// safe returns s when it is at most max bytes of the given characters,
// else "".
func safe(s, chars string, max int) string {
	s = strings.TrimSpace(s)
	if len(s) > max {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(chars, s[i]) < 0 {
			return ""
		}
	}
	return s
}

// parseAddr parses an IP address, unmapping IPv4-in-IPv6.
func parseAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// vaultName is the vault's name: the first label of its host, else the
// name its message gives ("Vault: <name>;location=…").
func vaultName(vault, msg string) string {
	if host := kvwire.HostOnly(vault); !kvwire.IsIP(host) {
		label, _, _ := strings.Cut(host, ".")
		if n := validVaultName(label); n != "" {
			return n
		}
	}
	if m := vaultLineRe.FindStringSubmatch(msg); m != nil {
		return validVaultName(m[1])
	}
	return ""
}

// validVaultName returns s when it is a valid vault or Managed HSM name (3
// to 24 letters, digits and hyphens, starting with a letter), else "".
func validVaultName(s string) string {
	if len(s) < 3 || len(s) > 24 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter || !(letter || c >= '0' && c <= '9' || c == '-') {
			return ""
		}
	}
	return s
}

func roundDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	return d.String()
}

// quote prepares a vault message for a detail: one line, tokens
// redacted, control characters dropped, at most max runes.
func quote(s string, max int) string {
	s = kvwire.Redact(strings.ToValidUTF8(s, ""))
	s = oneLine(s)
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = strings.TrimSpace(string(r[:max])) + "…"
	}
	return s
}

// sentence quotes a vault message and ends the sentence, unless the
// message ends one itself.
func sentence(msg string) string {
	if msg == "" {
		return "(no message)."
	}
	q := strconv.Quote(msg)
	if strings.HasSuffix(msg, ".") || strings.HasSuffix(msg, "!") || strings.HasSuffix(msg, "?") || strings.HasSuffix(msg, "…") {
		return q
	}
	return q + "."
}

// oneLine turns line breaks and other control characters into spaces
// and collapses runs of spaces.
func oneLine(s string) string {
	var b strings.Builder
	space := false
	for _, r := range strings.ToValidUTF8(s, "") {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
