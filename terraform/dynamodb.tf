# One users table per stage. The functions learn the names from their
# environment (USERS_TABLE_STAGING, USERS_TABLE_PROD) and pick one by the
# request's stage, validated against this fixed set.
locals {
  stages = toset(["staging", "prod"])
}

resource "aws_dynamodb_table" "users" {
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
}
