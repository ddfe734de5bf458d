#!/usr/bin/env bash
# The README's API tour as a script: run it against a running server.
#   BASE_URL      default http://127.0.0.1:8080
#   OPERATOR_KEY  the key `loyalty serve` printed (or LOYALTY_OPERATOR_KEY)
# Needs only bash, curl and sed. Exits non-zero at the first unexpected answer.
set -euo pipefail

BASE_URL=${BASE_URL:-http://127.0.0.1:8080}
OPERATOR_KEY=${OPERATOR_KEY:-${LOYALTY_OPERATOR_KEY:?set OPERATOR_KEY to the key the server printed}}
RUN=$(date +%s)-$$   # makes idempotency keys and codes unique per run

# call METHOD PATH KEY [BODY] [IDEMPOTENCY-KEY] -> prints the body, fails on a non-2xx status
call() {
  local method=$1 path=$2 key=$3 body=${4:-} idem=${5:-}
  local args=(-sS -X "$method" "$BASE_URL$path" -H "Authorization: Bearer $key" -w '\n%{http_code}')
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
  [ -n "$idem" ] && args+=(-H "Idempotency-Key: $idem")
  local output status
  output=$(curl "${args[@]}")
  status=${output##*$'\n'}
  output=${output%$'\n'*}
  echo "$method $path -> $status" >&2
  if [ "${EXPECT:-2xx}" = 2xx ] && [[ $status != 2* ]]; then
    echo "unexpected $status: $output" >&2
    exit 1
  fi
  if [ "${EXPECT:-2xx}" != 2xx ] && [ "$status" != "$EXPECT" ]; then
    echo "expected $EXPECT, got $status: $output" >&2
    exit 1
  fi
  printf '%s' "$output"
}

# field NAME JSON -> the first string value of "NAME" in JSON (in document order)
field() { printf '%s' "$2" | grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | sed 's/.*:"\(.*\)"/\1/'; }
# number NAME JSON -> the first numeric value of "NAME"
number() { printf '%s' "$2" | grep -o "\"$1\":-\{0,1\}[0-9][0-9]*" | head -n 1 | sed 's/.*://'; }
check() { if [ "$2" != "$3" ]; then echo "tour: $1 is '$2', expected '$3'" >&2; exit 1; fi; echo "  ok: $1 = $3" >&2; }

echo "== 1. The operator creates a merchant; the answer holds its admin key (shown once)" >&2
merchant=$(call POST /v1/merchants "$OPERATOR_KEY" '{"name":"Tour Café","currency":"CNY","timezone":"Asia/Shanghai"}')
KEY=$(field api_key "$merchant")

echo "== 2. Programme settings: 1 point per yuan, 100 points = 1 yuan, 7-day return window, 充500送100" >&2
call PATCH /v1/merchant "$KEY" '{"settings":{"points_per_currency_unit":"1","currency_per_point":"0.01","points_pending_days":7,"points_expiry_days":365,"stored_value_bonus_rules":[{"min_top_up":"500.00","bonus":"100.00"}]}}' >/dev/null

echo "== 3. A till key with the pos scope, and a store" >&2
pos=$(call POST /v1/api-keys "$KEY" '{"name":"till 1","scopes":["pos"]}')
POS=$(field key "$pos")
store=$(call POST /v1/stores "$KEY" "{\"code\":\"SH-$RUN\",\"name\":\"Shanghai Jing'an\"}")
STORE=$(field id "$store")

echo "== 4. A member joins at the till; the phone is stored in E.164" >&2
member=$(call POST /v1/members "$POS" "{\"phone\":\"138 0013 8000\",\"name\":\"Li Lei\",\"birthday\":\"1990-05-04\",\"external_id\":\"crm-$RUN\"}")
MEMBER=$(field id "$member")
check "phone" "$(field phone "$member")" "+8613800138000"

echo "== 5. Top-up 500.00 by card: the bonus rule adds 100.00" >&2
topup=$(call POST "/v1/members/$MEMBER/stored-value/top-ups" "$POS" "{\"amount\":\"500.00\",\"store_id\":\"$STORE\",\"payment_method\":\"card\"}" "topup-$RUN")
check "bonus" "$(field bonus "$topup")" "100.00"
check "stored value total" "$(field total "$topup")" "600.00"

echo "== 6. A purchase of 60.00 paid with stored value: principal and bonus drawn 5:1, 60 points pending" >&2
body="{\"member_id\":\"$MEMBER\",\"store_id\":\"$STORE\",\"external_id\":\"receipt-$RUN\",\"items\":[{\"sku\":\"LATTE\",\"name\":\"Latte\",\"category\":\"coffee\",\"quantity\":2,\"unit_price\":\"22.00\"},{\"sku\":\"CAKE\",\"name\":\"Cheesecake\",\"category\":\"food\",\"quantity\":1,\"unit_price\":\"16.00\"}],\"payments\":[{\"method\":\"stored_value\",\"amount\":\"60.00\"}]}"
purchase=$(call POST /v1/purchases "$POS" "$body" "purchase-$RUN")
PURCHASE=$(field id "$purchase")
check "points awarded" "$(number points_awarded "$purchase")" "60"
check "principal paid" "$(field principal "$purchase")" "50.00"

echo "== 7. The till retries the same request (same Idempotency-Key): same answer, nothing applied twice" >&2
again=$(call POST /v1/purchases "$POS" "$body" "purchase-$RUN")
check "retry answers byte for byte" "$([ "$again" = "$purchase" ] && echo same)" "same"
EXPECT=409 call POST /v1/purchases "$POS" "${body/LATTE/MOCHA}" "purchase-$RUN" >/dev/null
echo "  ok: the same key with another body is a 409" >&2

echo "== 8. Balances: 60 points pending, 540.00 stored value left" >&2
balances=$(call GET "/v1/members/$MEMBER/balances" "$POS")
check "pending points" "$(number pending "$balances")" "60"
check "stored value total" "$(field total "$balances")" "540.00"

echo "== 9. The cake comes back: refund by item; points and stored value return pro rata" >&2
refund=$(call POST "/v1/purchases/$PURCHASE/refunds" "$POS" '{"items":[{"sku":"CAKE","quantity":1}]}' "refund-$RUN")
check "refund amount" "$(field amount "$refund")" "16.00"
check "points reversed" "$(number points_reversed "$refund")" "16"

echo "== 10. A welcome gift of 500 points (admin adjustment), then a purchase paid partly with points" >&2
call POST "/v1/members/$MEMBER/points/adjustments" "$KEY" '{"points":500,"reason":"welcome gift"}' "adjust-$RUN" >/dev/null
EXPECT=403 call POST "/v1/members/$MEMBER/points/adjustments" "$POS" '{"points":500,"reason":"till cannot"}' "adjust-pos-$RUN" >/dev/null
echo "  ok: a pos key may not adjust points (403)" >&2
purchase2=$(call POST /v1/purchases "$POS" "{\"member_id\":\"$MEMBER\",\"store_id\":\"$STORE\",\"items\":[{\"sku\":\"TEA\",\"quantity\":1,\"unit_price\":\"18.00\"}],\"payments\":[{\"method\":\"points\",\"amount\":\"3.00\"},{\"method\":\"cash\",\"amount\":\"15.00\"}]}" "purchase2-$RUN")
check "points redeemed" "$(number points_redeemed "$purchase2")" "300"

echo "== 11. A count card (计次): 10 washes for 300.00 paid with stored value, one use" >&2
package=$(call POST /v1/count-card-packages "$KEY" "{\"name\":\"10 car washes\",\"sku\":\"WASH10-$RUN\",\"uses\":10,\"price\":\"300.00\",\"valid_days\":365}")
PACKAGE=$(field id "$package")
sale=$(call POST "/v1/members/$MEMBER/count-cards" "$POS" "{\"package_id\":\"$PACKAGE\",\"store_id\":\"$STORE\",\"payment_method\":\"stored_value\"}" "card-$RUN")
CARD=$(printf '%s' "$sale" | sed -n 's/.*"card":{"id":"\([^"]*\)".*/\1/p')
use=$(call POST "/v1/members/$MEMBER/count-cards/$CARD/consumptions" "$POS" "{\"uses\":1,\"store_id\":\"$STORE\"}" "wash-$RUN")
check "uses left" "$(number remaining "$use")" "9"

echo "== 12. Bad input is a problem+json and writes nothing" >&2
EXPECT=422 call POST /v1/purchases "$POS" "{\"member_id\":\"$MEMBER\",\"store_id\":\"$STORE\",\"items\":[{\"sku\":\"TEA\",\"quantity\":1,\"unit_price\":\"18.005\"}],\"payments\":[{\"method\":\"cash\",\"amount\":\"18.00\"}]}" "bad-$RUN" >/dev/null
EXPECT=400 call POST /v1/purchases "$POS" "$body" >/dev/null
EXPECT=404 call GET "/v1/members/mem_does_not_exist/balances" "$POS" >/dev/null
echo "  ok: 422 for three decimals, 400 without Idempotency-Key, 404 for an unknown member" >&2

echo "== 13. The member's ledger, newest first" >&2
ledger=$(call GET "/v1/members/$MEMBER/ledger?limit=20" "$KEY")
printf '%s' "$ledger" | grep -o '"kind":"[a-z_.]*"' | sed 's/"kind":/  /' >&2

echo "== 14. Tiers, and an admin's move (the member joined before tiers existed)" >&2
call PUT /v1/tiers "$KEY" '{"tiers":[{"code":"silver","name":"Silver"},{"code":"gold","name":"Gold","earn_multiplier":"2","benefits":"Double points"}]}' >/dev/null
moved=$(call PUT "/v1/members/$MEMBER/tier" "$KEY" '{"tier":"gold","reason":"opening-week VIP"}')
check "tier changed" "$(printf '%s' "$moved" | grep -o '"changed":true' | head -n 1)" '"changed":true'
history=$(call GET "/v1/members/$MEMBER/tier-history" "$KEY")
check "history source" "$(field source "$history")" "admin"

echo "== 15. A coupon: a template, one issued to the member, used on a purchase" >&2
template=$(call POST /v1/coupon-templates "$KEY" "{\"code\":\"TEN-$RUN\",\"name\":\"10 off 50\",\"kind\":\"amount_off\",\"value\":\"10.00\",\"min_spend\":\"50.00\",\"valid_days\":30}")
coupon=$(call POST "/v1/members/$MEMBER/coupons" "$KEY" "{\"template_id\":\"$(field id "$template")\"}")
COUPON=$(field id "$coupon")
with_coupon=$(call POST /v1/purchases "$POS" "{\"member_id\":\"$MEMBER\",\"store_id\":\"$STORE\",\"coupons\":[\"$COUPON\"],\"items\":[{\"sku\":\"BEANS\",\"quantity\":2,\"unit_price\":\"30.00\"}],\"payments\":[{\"method\":\"card\",\"amount\":\"50.00\"}]}" "coupon-$RUN")
check "amount due" "$(field amount_due "$with_coupon")" "50.00"
EXPECT=422 call POST /v1/purchases "$POS" "{\"member_id\":\"$MEMBER\",\"store_id\":\"$STORE\",\"coupons\":[\"$COUPON\"],\"items\":[{\"sku\":\"BEANS\",\"quantity\":2,\"unit_price\":\"30.00\"}],\"payments\":[{\"method\":\"card\",\"amount\":\"50.00\"}]}" "coupon-again-$RUN" >/dev/null
echo "  ok: a used coupon is refused (422)" >&2

echo "== 16. A webhook for purchases, the event feed, and what decided a transaction" >&2
call POST /v1/webhooks "$KEY" '{"url":"https://example.com/loyalty-hook","events":["purchase.recorded","tier.changed"],"secret":"whsec-tour-0123456789"}' >/dev/null
events=$(call GET "/v1/events?type=tier.changed" "$KEY")
check "tier.changed event" "$(field type "$events")" "tier.changed"
explained=$(call GET "/v1/transactions/$(field transaction_id "$with_coupon")/explain" "$KEY")
check "earn policy" "$(field policy "$explained")" "base_rate"

echo "tour complete" >&2
