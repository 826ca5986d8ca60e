// Attachments: a file encrypted in chunks under a fresh key and stored at the relay as an opaque blob.
//
// Blob layout (what the relay stores, and what the descriptor's digest covers):
//   header (24 bytes) | c_0 | c_1 | ... | c_{n-1}
// where the header and c_i are libsodium's crypto_secretstream_xchacha20poly1305 (computed by
// crypto::SecretStream, byte for byte) under the key in the descriptor; c_i encrypts plaintext bytes
// [i*chunk_size, (i+1)*chunk_size) with tag MESSAGE, and the last one with tag FINAL (an empty file is one
// empty FINAL chunk). Each piece sent to the relay is one c_i (the header rides in front of c_0), so a piece
// never exceeds the relay's 64 KiB chunk cap.
//
// Why it is safe to act on a downloaded blob: secretstream authenticates every chunk and chains it to its
// position, so a changed, reordered or dropped chunk fails to open; a blob that stops early lacks the FINAL
// tag, one that runs on has bytes after it or the wrong size; and the BLAKE2b-256 digest of the whole blob,
// sent with the key inside the end-to-end encrypted message, is checked before the file is handed over. Any
// of these is kTampered, and the partly written file is deleted.
//
// Resuming: a dropped link shows up as kUnavailable from the BlobChannel. Upload and download then wait
// (TransferOptions::wait) and retry the same batch of pieces, keeping their place: the upload keeps its
// secretstream state and the encrypted pieces of the batch (the relay accepts a piece it already holds as a
// retransmission), the download keeps its state and the pieces already written. A transfer gives up after
// `max_retries` consecutive failures with no progress between them.
//
// Thread rules: UploadAttachment and DownloadAttachment block on the channel; call them from a thread that
// may block (not a client callback, not a libuv loop). Each overlaps its work with the channel's on helper
// threads of its own: the upload reads and encrypts the next batch on one while two batches travel (the
// second sent while the first waits for its answers, BlobChannel::StartPutMany); the download fetches
// batches on one and digests them on a second, ahead of the decryption on the calling thread. The channel
// is still called by one thread at a time. Memory: up to 3 batches in the upload and 3 in the download
// (6 MiB each at the default window and chunk size), plus the copies the channel and the link keep of what
// is in flight (for the relay channel, a command per piece until answered, and a slow link's send queue).
// Progress runs on the calling thread; `wait` runs wherever the channel call that failed ran (a helper, for
// downloads). Secrets: the key is drawn from the Random seam; plaintext is read into and decrypted into
// wiping buffers and never logged; the plaintext file on disk is the caller's to protect.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/base/status.h"
#include "core/wire/attachment.h"

namespace cw::runtime {

// Where blobs live: the relay (RelayBlobChannel) or, in tests, memory.
class BlobChannel {
 public:
  struct Read {
    uint64_t total_size = 0;  // the blob's size as the store reports it
    Bytes data;
  };

  virtual ~BlobChannel() = default;
  // A new, empty blob that will hold exactly `size` bytes.
  virtual Result<wire::BlobId> Create(uint64_t size) = 0;
  // Appends `piece` at `offset`, which must be the bytes stored so far; a piece the store already holds is
  // accepted again unchanged. Returns the bytes stored so far. kUnavailable when the link dropped (the
  // piece may or may not have been stored).
  virtual Result<uint64_t> Put(const wire::BlobId& id, uint64_t offset, ByteView piece) = 0;
  // Up to `max_len` bytes at `offset` of a complete blob. kNotFound for an unknown or incomplete blob.
  virtual Result<Read> Get(const wire::BlobId& id, uint64_t offset, uint32_t max_len) = 0;

  // Batches, so a channel over a network can keep several requests in flight (the relay syncs every piece
  // before it answers; pieces in flight together share one sync). The defaults call Put / Get in turn.
  // PutMany appends `pieces` in order from `offset`, each continuing the one before, and returns the bytes
  // stored after the last; on error any prefix of them may be stored.
  virtual Result<uint64_t> PutMany(const wire::BlobId& id, uint64_t offset, std::span<const Bytes> pieces);
  // PutMany in two halves, so that an upload can send its next batch while this one's answers are on their
  // way (a relay answers a piece only once it is synced). StartPutMany sends the pieces, or has them sent, in
  // order after everything started before; Wait on what it returns gives what PutMany would have, and
  // `pieces` must stay as they are until then. A batch started before the one ahead of it is answered may be
  // refused where that one failed (its pieces no longer continue the blob): the uploader sends it again once
  // those are stored. The default defers the whole PutMany to Wait, so a channel without its own stays
  // strictly one batch at a time.
  class PendingPut {
   public:
    virtual ~PendingPut() = default;
    virtual Result<uint64_t> Wait() = 0;
  };
  virtual std::unique_ptr<PendingPut> StartPutMany(const wire::BlobId& id, uint64_t offset,
                                                   std::span<const Bytes> pieces);
  // GetMany reads consecutive ranges from `offset`, lengths[i] bytes each (up to; a range past the end comes
  // back short), one Read per range.
  virtual Result<std::vector<Read>> GetMany(const wire::BlobId& id, uint64_t offset,
                                            std::span<const uint32_t> lengths);
};

// Plaintext bytes done so far and in all.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

inline constexpr int kDefaultTransferRetries = 8;
// Pieces per batch handed to the channel: 2 MiB at the largest chunk size. The relay channel keeps a whole
// upload batch in flight (kRelayPutsInFlight) and fewer downloads (kRelayPiecesInFlight), so a download
// batch keeps the pipe full except at its end.
inline constexpr size_t kDefaultTransferWindow = 32;

struct TransferOptions {
  ProgressFn progress;
  // Consecutive kUnavailable answers tolerated before giving up with kUnavailable.
  int max_retries = kDefaultTransferRetries;
  // Called before retry number `attempt` (1, 2, ...). Default: sleep 50 ms << (attempt - 1), at most 2 s.
  std::function<void(int attempt)> wait;
  // Pieces handed to the channel at once (PutMany / GetMany), and so between progress reports. A batch that
  // fails with kUnavailable is retried whole: pieces the store already holds are accepted again unchanged.
  size_t window = kDefaultTransferWindow;
};

struct UploadOptions {
  TransferOptions transfer;
  Random* random = nullptr;                              // draws the key; SystemRandom when null
  std::string file_name;                                 // sanitised; default: the path's last component
  std::string media_type;                                // "" when unknown
  uint32_t chunk_size = wire::kMaxAttachmentChunkPlain;  // plaintext bytes per chunk (tests use small ones)
};

// Encrypts the regular file at `path` under a fresh key and uploads it as a new blob. Returns the descriptor
// that lets a recipient fetch it. kNotFound / kPermissionDenied for an unreadable file; kInvalidArgument for
// a file larger than wire::kMaxAttachmentSize or a bad option; kAborted when the file changed size while it
// was read; kUnavailable when the channel stayed down; the channel's other errors as they are.
Result<wire::AttachmentDescriptor> UploadAttachment(BlobChannel& channel, const std::string& path,
                                                    const UploadOptions& options = {});

// Downloads the blob the descriptor names, checks and decrypts it into `dest_path`, which must not exist
// yet (kAlreadyExists). The plaintext goes into an unnamed file (mode 0600) in dest_path's directory, is
// synced, and gets the name dest_path only once every check passed; the directory is then synced too. So on
// failure, or if the app is killed mid-way, nothing is left under any name (on a filesystem without
// O_TMPFILE a crash can leave a hidden ".cw-<hex>.part" there), and concurrent downloads to one name never
// mix: one gets the name, the others kAlreadyExists. kTampered for a blob that fails any check; kNotFound for
// an unknown or expired blob; kUnavailable when the channel stayed down; kInvalidArgument for a name too
// long for the filesystem.
Status DownloadAttachment(BlobChannel& channel, const wire::AttachmentDescriptor& descriptor,
                          const std::string& dest_path, const TransferOptions& options = {});

}  // namespace cw::runtime
