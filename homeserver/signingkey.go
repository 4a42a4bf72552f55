package homeserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SigningKey is the server's ed25519 key, stored in Synapse's format
// ("ed25519 <version> <unpadded base64 seed>") so that keys can move
// between implementations.
type SigningKey struct {
	ID   string // "ed25519:<version>"
	Priv ed25519.PrivateKey
}

// Public returns the public half.
func (k SigningKey) Public() ed25519.PublicKey { return k.Priv.Public().(ed25519.PublicKey) }

// LoadOrCreateSigningKey reads the key at path, creating it (mode 0600)
// when the file does not exist.
func LoadOrCreateSigningKey(path string) (SigningKey, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := newSigningKey()
		if err != nil {
			return k, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return k, false, fmt.Errorf("signing key: %w", err)
		}
		line := fmt.Sprintf("ed25519 %s %s\n", strings.TrimPrefix(k.ID, "ed25519:"),
			base64.RawStdEncoding.EncodeToString(k.Priv.Seed()))
		// O_EXCL: two instances starting at once must not both write.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				k, err := LoadSigningKey(path)
				return k, false, err
			}
			return k, false, fmt.Errorf("signing key: %w", err)
		}
		if _, err := f.WriteString(line); err != nil {
			f.Close()
			return k, false, fmt.Errorf("signing key: %w", err)
		}
		if err := f.Close(); err != nil {
			return k, false, fmt.Errorf("signing key: %w", err)
		}
		return k, true, nil
	}
	if err != nil {
		return SigningKey{}, false, fmt.Errorf("signing key: %w", err)
	}
	k, err := parseSigningKey(string(b))
	return k, false, err
}

// LoadSigningKey reads an existing key file.
func LoadSigningKey(path string) (SigningKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return SigningKey{}, fmt.Errorf("signing key: %w", err)
	}
	return parseSigningKey(string(b))
}

func parseSigningKey(s string) (SigningKey, error) {
	f := strings.Fields(strings.TrimSpace(s))
	if len(f) != 3 || f[0] != "ed25519" {
		return SigningKey{}, errors.New("signing key: file is not \"ed25519 <version> <base64 seed>\"")
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return SigningKey{}, errors.New("signing key: seed is not 32 bytes of base64")
	}
	return SigningKey{ID: "ed25519:" + f[1], Priv: ed25519.NewKeyFromSeed(seed)}, nil
}

func newSigningKey() (SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKey{}, err
	}
	v := make([]byte, 4)
	_, _ = rand.Read(v)
	ver := "a_" + strings.NewReplacer("+", "", "/", "").Replace(base64.RawStdEncoding.EncodeToString(v))[:4]
	return SigningKey{ID: "ed25519:" + ver, Priv: priv}, nil
}
