#!/usr/bin/env bash
# libcipherward.so exports the C API, signal_buffer_free (our wiping one, so libsignal's frees reach it) and
# curve25519_donna (libsignal's X25519 on libsodium), and nothing else. Usage: exports_test.sh LIBRARY
set -euo pipefail
# Here-strings, not `echo | grep -q`: grep -q exits at the first match and, under pipefail, the writer's
# SIGPIPE would fail a check that passed.
lib="$1"
syms="$(nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//')"
for f in signal_buffer_free curve25519_donna; do
  grep -qx "$f" <<<"$syms" || { echo "$f not exported"; exit 1; }
done
for f in cw_version cw_strerror cw_client_open cw_client_close cw_client_send cw_buffer_free cw_client_open_ex \
         cw_client_lock cw_client_unlock cw_client_send_file cw_client_fetch_attachment cw_client_grant_consent \
         cw_client_withdraw_consent cw_client_list_consents cw_client_export cw_client_mark_read \
         cw_client_send_for_purpose cw_client_send_file_for_purpose cw_client_set_clinic cw_client_list_contacts \
         cw_client_revoke_contact cw_client_remove_contact cw_client_erase_conversation cw_client_set_disappearing \
         cw_client_history cw_client_set_on_group_message cw_client_group_create cw_client_group_add \
         cw_client_group_remove cw_client_group_send cw_client_list_groups cw_client_group_history \
         cw_client_invite_valid_for cw_client_list_invites cw_client_cancel_invite; do
  grep -qx "$f" <<<"$syms" || { echo "$f not exported"; exit 1; }
done
extra="$(echo "$syms" | grep -v -e '^cw_' -e '^signal_buffer_free$' -e '^curve25519_donna$' -e '^$' || true)"
[ -z "$extra" ] || { echo "unexpected exports:"; echo "$extra"; exit 1; }
# libsodium must be searched before libsignal-protocol-c (both define crypto_hash_sha512).
needed="$(readelf -d "$lib" | awk '/NEEDED/ {print $NF}' | tr -d '[]')"
first="$(echo "$needed" | grep -n -e '^libsodium' -e '^libsignal-protocol-c' | head -n1)"
case "$first" in *libsodium*) ;; *) echo "libsodium is not ahead of libsignal-protocol-c in DT_NEEDED:"; echo "$needed"; exit 1;; esac
echo ok
