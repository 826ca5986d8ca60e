// Test fixtures with a keystore (minimum Argon2id cost) and a SealedStore in a fresh temporary directory, and
// small helpers to write and read string values.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/session/store.h"
#include "storage/keystore.h"
#include "storage/sealed_store.h"
#include "tests/storage/storage_test_util.h"

namespace cw::storage::testing {

inline constexpr std::string_view kPassphrase = "a long enough passphrase";

inline session::Write Put(session::Table t, std::string key, std::string_view value) {
  return session::Write{t, std::move(key), SecretBytes(AsBytes(value))};
}
inline session::Write Delete(session::Table t, std::string key) {
  return session::Write{t, std::move(key), std::nullopt};
}

// A keystore (minimum Argon2id cost) in a fresh temporary directory, a place for a store opened on it, and
// helpers that read string values from that store.
class KeystoreFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ks = Keystore::Create(dir_.Sub("keystore"), AsBytes(kPassphrase),
                               KeystoreOptions::MinimumCostForTesting());
    ASSERT_TRUE(ks.has_value()) << ks.error().ToString();
    keystore_ = std::move(*ks);
  }

  // The value as text, "<absent>", or "<CODE: message>".
  std::string Value(session::Table t, std::string_view key) {
    auto r = store_->Get(t, key);
    if (!r.has_value()) return "<" + r.error().ToString() + ">";
    if (!r->has_value()) return "<absent>";
    return std::string((*r)->reveal().begin(), (*r)->reveal().end());
  }
  std::vector<std::string> List(session::Table t, std::string_view prefix) {
    auto r = store_->ListKeys(t, prefix);
    if (!r.has_value()) {
      ADD_FAILURE() << "ListKeys: " << r.error().ToString();
      return {};
    }
    return *r;
  }

  TempDir dir_;
  std::unique_ptr<Keystore> keystore_;
  std::unique_ptr<SealedStore> store_;
};

// KeystoreFixture with a SealedStore (default options) open in it.
class SealedStoreFixture : public KeystoreFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(KeystoreFixture::SetUp());
    OpenStore();
  }

  SealedStoreOptions Options() { return SealedStoreOptions{}; }
  std::string db_path() const { return dir_.Sub("db"); }

  void OpenStore() {
    auto s = SealedStore::Open(db_path(), keystore_.get(), Options());
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }
  void CloseStore() { store_.reset(); }
  void Reopen() {
    CloseStore();
    OpenStore();
  }

  Status Commit(session::Write w) {
    session::WriteBatch b;
    b.writes.push_back(std::move(w));
    return store_->Commit(std::move(b));
  }
};

}  // namespace cw::storage::testing
