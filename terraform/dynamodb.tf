# One users table per stage. The functions learn the names from their
# environment (USERS_TABLE_STAGING, USERS_TABLE_PROD) and pick one by the
# request's stage, validated against this fixed set.
locals {
  stages = toset(["staging", "prod"])
}

resource "aws_dynamodb_table" "users" {
  #checkov:skip=CKV_AWS_119:encrypted at rest with DynamoDB's AWS-owned key; a customer-managed KMS key is an account decision
  for_each = local.stages

  name         = "${var.name}-users-${each.key}"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "id"

  attribute {
    name = "id"
    type = "S"
  }

  point_in_time_recovery {
    enabled = each.key == "prod"
  }

  # Prod's data outlives a careless destroy: `cargo xtask destroy
  # --delete-data` lifts this first (var.prod_deletion_protection).
  deletion_protection_enabled = each.key == "prod" && var.prod_deletion_protection
}

# One chirps table per stage (CHIRPS_TABLE_STAGING, CHIRPS_TABLE_PROD), two
# kinds of item (lambdas/chirps/src/dynamo.rs):
# - a chirp: pk = "feed", sk = "<created millis, 15 digits>#<id>" (newest
#   last in key order: the feed is one Query, read backwards);
# - the counter: pk = "counter", sk = "chirps", `count` (N), ADDed to in the
#   same TransactWriteItems as each chirp's Put, so it never drifts.
#
# The trade-off: every chirp is in one partition ("feed") and the count is
# one item. DynamoDB serves a partition at up to 1,000 write units and 3,000
# read units a second, whatever the on-demand capacity, and a transactional
# write costs double (the counter's ADD alone is 2 units: at most about 500
# chirps a second, fewer for long texts); sort keys that grow with time
# always write at the end, so splitting for heat does not help. In return a
# page is one Query in key order and the count one GetItem. Past that, the
# feed would be sharded (pk = "feed#<n>", merged when listing) and the
# counter split into shards summed when read.
resource "aws_dynamodb_table" "chirps" {
  #checkov:skip=CKV_AWS_119:encrypted at rest with DynamoDB's AWS-owned key; a customer-managed KMS key is an account decision
  for_each = local.stages

  name         = "${var.name}-chirps-${each.key}"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  point_in_time_recovery {
    enabled = each.key == "prod"
  }

  # Prod's data outlives a careless destroy: `cargo xtask destroy
  # --delete-data` lifts this first (var.prod_deletion_protection).
  deletion_protection_enabled = each.key == "prod" && var.prod_deletion_protection
}
