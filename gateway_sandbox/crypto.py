"""Keys, signatures, tokens and password hashes of the sandbox ledger.

- An agent is a secp256k1 key pair; its id is the compressed public key as 66 hex characters.
- A transaction is signed with ECDSA over SHA-256 of its canonical JSON; the signature is kept
  in its 64-byte compact form (``r || s``, low-s normalised by libsecp256k1), and its 128 hex
  characters are the transaction id.
- Tokens are random URL-safe strings; only their SHA-256 is stored, so a token can be looked up
  but not read back from the database.
- Passwords are hashed with scrypt and a random salt, and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from coincurve import PrivateKey, PublicKey
from coincurve.ecdsa import cdata_to_der, der_to_cdata, deserialize_compact, serialize_compact

#: scrypt cost parameters (about 0.1 s per hash on a small machine).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    """The one serialisation that is signed and hashed: sorted keys, no spaces, UTF-8 text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def new_private_key() -> PrivateKey:
    return PrivateKey()


def public_key_hex(private_key: PrivateKey) -> str:
    """The agent id: the compressed public key, 66 lowercase hex characters (``02``/``03``...)."""
    return private_key.public_key.format(compressed=True).hex()


def sign(private_key: PrivateKey, message: bytes) -> str:
    """ECDSA signature of SHA-256(message) as 128 hex characters (64-byte compact form)."""
    der = private_key.sign(message)  # hashes with SHA-256, deterministic nonce (RFC 6979)
    return serialize_compact(der_to_cdata(der)).hex()


def verify_signature(public_key: str, signature: str, message: bytes) -> bool:
    """Whether *signature* (128 hex) is *public_key*'s (66 hex) signature of *message*."""
    try:
        raw = bytes.fromhex(signature)
        if len(raw) != 64:
            return False
        der = cdata_to_der(deserialize_compact(raw))
        return PublicKey(bytes.fromhex(public_key)).verify(der, message)
    except (ValueError, TypeError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the ledger stores for a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_password(password: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    """Return ``(salt, scrypt hash)`` of *password*; a fresh 16-byte salt unless one is given."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_DKLEN
    )
    return salt, digest


def check_password(password: str, salt: bytes, expected: bytes) -> bool:
    _, digest = hash_password(password, salt)
    return hmac.compare_digest(digest, expected)


def block_hash(previous_hash: str, transactions: list[dict[str, Any]]) -> str:
    """SHA-256 of the previous block's hash followed by the canonical JSON of this block's transactions."""
    return hashlib.sha256((previous_hash + canonical_json(transactions)).encode("utf-8")).hexdigest()
