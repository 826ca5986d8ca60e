// Helpers for storage tests: a unique temporary directory removed afterwards, a raw RocksDB handle that
// reads and rewrites the sealed bytes behind a SealedStore's back, and status assertions.
#pragma once

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "tests/common/test_util.h"

namespace cw::storage::testing {

using ::cw::testing::CodeOf;
using ::cw::testing::Describe;

#define CW_ST_ASSERT_OK(expr)                                               \
  do {                                                                      \
    const auto& cw_r_ = (expr);                                             \
    ASSERT_EQ(::cw::storage::testing::CodeOf(cw_r_), ::cw::StatusCode::kOk) \
        << #expr << ": " << ::cw::storage::testing::Describe(cw_r_);        \
  } while (0)
#define CW_ST_EXPECT_CODE(expr, code)                                \
  do {                                                               \
    const auto& cw_r_ = (expr);                                      \
    EXPECT_EQ(::cw::storage::testing::CodeOf(cw_r_), code)           \
        << #expr << ": " << ::cw::storage::testing::Describe(cw_r_); \
  } while (0)

// A temporary directory named after this test folder.
class TempDir : public ::cw::testing::TempDir {
 public:
  TempDir() : ::cw::testing::TempDir("cw_storage_test") {}
};

// Opens the database with every column family it has, as an attacker with the files would.
// REQUIRES: no SealedStore has the database open.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    std::vector<std::string> names;
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names);
    if (!s.ok()) {
      ADD_FAILURE() << s.ToString();
      return;
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& n : names) descriptors.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    s = rocksdb::DB::Open(rocksdb::DBOptions(), path, descriptors, &handles, &db);
    if (!s.ok()) {
      ADD_FAILURE() << s.ToString();
      return;
    }
    db_.reset(db);
    for (auto* h : handles) cfs_[h->GetName()] = h;
  }
  ~RawDb() {
    for (auto& [n, h] : cfs_) db_->DestroyColumnFamilyHandle(h);
    if (db_) db_->Close().PermitUncheckedError();
  }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  bool ok() const { return db_ != nullptr; }
  rocksdb::DB* db() { return db_.get(); }
  rocksdb::ColumnFamilyHandle* cf(const std::string& name) {
    auto it = cfs_.find(name);
    if (it == cfs_.end()) ADD_FAILURE() << "no column family " << name;
    return it == cfs_.end() ? nullptr : it->second;
  }
  bool HasCf(const std::string& name) const { return cfs_.count(name) != 0; }

  std::string Get(const std::string& cf_name, const std::string& key) {
    std::string v;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(cf_name), key, &v);
    if (!s.ok()) ADD_FAILURE() << "raw get: " << s.ToString();
    return v;
  }
  void Put(const std::string& cf_name, const std::string& key, const std::string& value) {
    rocksdb::Status s = db_->Put(rocksdb::WriteOptions(), cf(cf_name), key, value);
    if (!s.ok()) ADD_FAILURE() << "raw put: " << s.ToString();
  }
  void Delete(const std::string& cf_name, const std::string& key) {
    rocksdb::Status s = db_->Delete(rocksdb::WriteOptions(), cf(cf_name), key);
    if (!s.ok()) ADD_FAILURE() << "raw delete: " << s.ToString();
  }
  std::vector<std::string> Keys(const std::string& cf_name) {
    std::vector<std::string> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(cf_name)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) out.push_back(it->key().ToString());
    return out;
  }
  rocksdb::Status CreateCf(const std::string& name) {
    rocksdb::ColumnFamilyHandle* h = nullptr;
    rocksdb::Status s = db_->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), name, &h);
    if (s.ok()) cfs_[name] = h;
    return s;
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs_;
};

// Every byte of every file under `dir`, for "this text appears nowhere on disk" checks.
inline bool AnyFileContains(const std::string& dir, const std::string& needle) {
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (data.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace cw::storage::testing
