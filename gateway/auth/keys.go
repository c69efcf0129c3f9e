package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// Signing algorithms, pinned per key type: a key verifies tokens of exactly
// one algorithm, so a token cannot pick how its own signature is checked.
const (
	algHS256 = "HS256" // dev key only
	algRS256 = "RS256" // *rsa.PublicKey, 2048..16384 bits
	algES256 = "ES256" // *ecdsa.PublicKey on P-256
	algEdDSA = "EdDSA" // ed25519.PublicKey
)

// Key size bounds for RSA. Below 2048 bits is breakable; above 16384 bits a
// single verification becomes a cheap way to burn CPU.
const (
	minRSABits = 2048
	maxRSABits = 16384
)

// maxPEMFile bounds a public key file; a key or a short chain is a few KiB.
const maxPEMFile = 1 << 20

// verifyKey is one key that may verify tokens. Immutable once built.
type verifyKey struct {
	alg string // the only algorithm this key verifies
	kid string // JWKS key id; empty for PEM and dev keys
	key any    // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// pinnedAlg returns the algorithm a public key verifies, or an error for key
// types and sizes Parley does not accept.
func pinnedAlg(pub any) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits || n > maxRSABits {
			return "", fmt.Errorf("RSA key of %d bits (want %d..%d)", n, minRSABits, maxRSABits)
		}
		return algRS256, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("ECDSA key on %s (want P-256)", k.Curve.Params().Name)
		}
		return algES256, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", fmt.Errorf("Ed25519 key of %d bytes", len(k))
		}
		return algEdDSA, nil
	default:
		return "", fmt.Errorf("unsupported public key type %T", pub)
	}
}

// loadPEMFile reads every public key in a PEM file: "PUBLIC KEY" (PKIX),
// "RSA PUBLIC KEY" (PKCS #1) and "CERTIFICATE" blocks (only the key is used;
// the certificate's validity period and chain are not checked). A private key
// block is an error, so a private key cannot be deployed by mistake where a
// public one belongs.
func loadPEMFile(path string) ([]verifyKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPEMFile)
	}
	var keys []verifyKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var pub any
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
			return nil, fmt.Errorf("%s: block %d is a private key; configure the public key", path, n)
		default:
			return nil, fmt.Errorf("%s: block %d: unsupported PEM type %q", path, n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: block %d: %w", path, n, err)
		}
		alg, err := pinnedAlg(pub)
		if err != nil {
			return nil, fmt.Errorf("%s: block %d: %w", path, n, err)
		}
		keys = append(keys, verifyKey{alg: alg, key: pub})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no PEM public key found", path)
	}
	return keys, nil
}

var errNoKey = errors.New("no key for this algorithm and key id")
