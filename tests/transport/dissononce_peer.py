#!/usr/bin/python3
"""The other side of tests/transport/noise_interop_test.cc: an independent Noise implementation (Debian's
python3-dissononce) speaking the Cipherward link format over stdin/stdout.

  dissononce_peer.py PATTERN ROLE STATIC_PRIVATE_HEX REMOTE_STATIC_HEX|- PROLOGUE_HEX

Wire (transport/frame.h): records of a 16-bit big-endian length and a Noise message; after the handshake the
plaintexts of the transport messages form a stream of frames, each a 32-bit big-endian length and a payload.

Handshake messages carry the payloads b"py-hs-<index>". Then it sends, in one Noise message, two frames:
b"hh:" + the handshake hash, and b"hello from dissononce". It answers every frame F with b"echo:" + F, cut
into Noise messages of at most 65519 plaintext bytes, until the frame b"bye", which it answers with
b"bye-ack" before exiting 0. Any error exits nonzero with a message on stderr.
"""
import struct
import sys

from dissononce.cipher.chachapoly import ChaChaPolyCipher
from dissononce.dh.x25519.private import PrivateKey
from dissononce.dh.x25519.x25519 import X25519DH
from dissononce.hash.blake2b import Blake2bHash
from dissononce.processing.handshakepatterns.interactive.IK import IKHandshakePattern
from dissononce.processing.handshakepatterns.interactive.KK import KKHandshakePattern
from dissononce.processing.handshakepatterns.interactive.XK import XKHandshakePattern
from dissononce.processing.impl.cipherstate import CipherState
from dissononce.processing.impl.handshakestate import HandshakeState
from dissononce.processing.impl.symmetricstate import SymmetricState

MAX_PLAINTEXT = 65535 - 16

inp = sys.stdin.buffer
out = sys.stdout.buffer


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = inp.read(n - len(data))
        if not chunk:
            raise EOFError("peer closed")
        data += chunk
    return data


def read_record():
    (n,) = struct.unpack(">H", read_exact(2))
    return read_exact(n)


def write_records(messages):
    out.write(b"".join(struct.pack(">H", len(m)) + m for m in messages))
    out.flush()


def main():
    pattern_name, role, s_hex, rs_hex, prologue_hex = sys.argv[1:6]
    pattern = {"XK": XKHandshakePattern, "IK": IKHandshakePattern, "KK": KKHandshakePattern}[pattern_name]()
    initiator = role == "initiator"
    dh = X25519DH()
    s = dh.generate_keypair(PrivateKey(bytes.fromhex(s_hex)))
    rs = None if rs_hex == "-" else dh.create_public(bytes.fromhex(rs_hex))
    hs = HandshakeState(SymmetricState(CipherState(ChaChaPolyCipher()), Blake2bHash()), X25519DH())
    hs.initialize(pattern, initiator, bytes.fromhex(prologue_hex), s=s, rs=rs)

    ciphers = None
    for index in range(len(pattern.message_patterns)):
        if (index % 2 == 0) == initiator:
            buf = bytearray()
            ciphers = hs.write_message(b"py-hs-%d" % index, buf)
            write_records([bytes(buf)])
        else:
            payload = bytearray()
            ciphers = hs.read_message(read_record(), payload)
    send, recv = ciphers if initiator else (ciphers[1], ciphers[0])
    handshake_hash = hs.symmetricstate.get_handshake_hash()

    def send_frames(frames):
        stream = b"".join(struct.pack(">I", len(f)) + f for f in frames)
        chunks = [stream[i:i + MAX_PLAINTEXT] for i in range(0, len(stream), MAX_PLAINTEXT)]
        write_records([send.encrypt_with_ad(b"", c) for c in chunks])

    send_frames([b"hh:" + handshake_hash, b"hello from dissononce"])
    stream = b""
    while True:
        stream += recv.decrypt_with_ad(b"", read_record())
        while len(stream) >= 4:
            (n,) = struct.unpack(">I", stream[:4])
            if n == 0:
                raise ValueError("zero-length frame")
            if len(stream) < 4 + n:
                break
            frame, stream = stream[4:4 + n], stream[4 + n:]
            if frame == b"bye":
                send_frames([b"bye-ack"])
                return 0
            send_frames([b"echo:" + frame])


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # the C++ test prints stderr on failure
        print("dissononce_peer: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
