package main

// Server side of SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802/7677 as MongoDB uses them) for one user.
// SCRAM-SHA-1 hashes MongoDB's legacy digest hex(md5("user:mongo:password")) instead of the password.

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"strconv"
	"strings"
)

const scramIterations = 4096 // the minimum drivers accept; logins are not what is measured

type scramKeys struct {
	hash      func() hash.Hash
	salt      []byte
	storedKey []byte
	serverKey []byte
}

func newScramKeys(mechanism, user, password string) (*scramKeys, error) {
	keys := &scramKeys{salt: make([]byte, 16)}
	if _, err := rand.Read(keys.salt); err != nil {
		return nil, err
	}
	secret := password
	size := 32
	keys.hash = sha256.New
	if mechanism == "SCRAM-SHA-1" {
		digest := md5.Sum([]byte(user + ":mongo:" + password))
		secret = hex.EncodeToString(digest[:])
		size = 20
		keys.hash = sha1.New
	}
	salted, err := pbkdf2.Key(keys.hash, secret, keys.salt, scramIterations, size)
	if err != nil {
		return nil, err
	}
	clientKey := keys.hmac(salted, "Client Key")
	h := keys.hash()
	h.Write(clientKey)
	keys.storedKey = h.Sum(nil)
	keys.serverKey = keys.hmac(salted, "Server Key")
	return keys, nil
}

func (k *scramKeys) hmac(key []byte, message string) []byte {
	mac := hmac.New(k.hash, key)
	mac.Write([]byte(message))
	return mac.Sum(nil)
}

// scramConversation is the state between saslStart and saslContinue on one connection.
type scramConversation struct {
	keys        *scramKeys
	nonce       string
	authMessage string // client-first-bare + "," + server-first (the client-final part is added at the end)
	skipEmpty   bool
	step        int
}

func attribute(message, name string) string {
	for _, part := range strings.Split(message, ",") {
		if strings.HasPrefix(part, name+"=") {
			return part[len(name)+1:]
		}
	}
	return ""
}

// start checks the client-first message and returns the server-first message.
func (s *server) scramStart(mechanism string, payload []byte, skipEmpty bool) (*scramConversation, []byte, bool) {
	keys := s.keys[mechanism]
	message := string(payload)
	if keys == nil || !strings.HasPrefix(message, "n,") {
		return nil, nil, false
	}
	bare := message[strings.Index(message[2:], ",")+3:]
	user := attribute(bare, "n")
	clientNonce := attribute(bare, "r")
	if user != s.user || clientNonce == "" {
		return nil, nil, false
	}
	random := make([]byte, 24)
	_, _ = rand.Read(random)
	nonce := clientNonce + base64.StdEncoding.EncodeToString(random)
	first := "r=" + nonce + ",s=" + base64.StdEncoding.EncodeToString(keys.salt) + ",i=" + strconv.Itoa(scramIterations)
	return &scramConversation{keys: keys, nonce: nonce, authMessage: bare + "," + first, skipEmpty: skipEmpty, step: 1}, []byte(first), true
}

// finish checks the client's proof and returns the server-final message.
func (c *scramConversation) finish(payload []byte) ([]byte, bool) {
	message := string(payload)
	index := strings.LastIndex(message, ",p=")
	if index < 0 || attribute(message, "r") != c.nonce {
		return nil, false
	}
	proof, err := base64.StdEncoding.DecodeString(message[index+3:])
	if err != nil || len(proof) != len(c.keys.storedKey) {
		return nil, false
	}
	authMessage := c.authMessage + "," + message[:index]
	signature := c.keys.hmac(c.keys.storedKey, authMessage)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ signature[i]
	}
	h := c.keys.hash()
	h.Write(clientKey)
	if !bytes.Equal(h.Sum(nil), c.keys.storedKey) {
		return nil, false
	}
	serverSignature := c.keys.hmac(c.keys.serverKey, authMessage)
	return []byte("v=" + base64.StdEncoding.EncodeToString(serverSignature)), true
}
