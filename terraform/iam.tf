# One execution role for every function, allowed exactly what the code does:
# the item actions of `lambdas/users/src/dynamo.rs` on the two users tables
# (every write there is a conditional UpdateItem; a delete writes a tombstone),
# those of `lambdas/chirps/src/dynamo.rs` on the two chirps tables, and
# writing to the functions' own log groups.
data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "${var.name}-lambda"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "this" {
  statement {
    sid       = "UsersItems"
    actions   = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    resources = [for table in aws_dynamodb_table.users : table.arn]
  }

  # lambdas/chirps/src/dynamo.rs: a chirp is saved by a TransactWriteItems
  # of a Put and an UpdateItem (ADD to the counter), which IAM authorizes as
  # those two actions; the feed is a Query, the count a GetItem.
  statement {
    sid = "ChirpsItems"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:UpdateItem",
    ]
    resources = [for table in aws_dynamodb_table.chirps : table.arn]
  }

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for group in aws_cloudwatch_log_group.this : "${group.arn}:*"]
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "${var.name}-lambda"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}
