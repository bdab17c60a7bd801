# Who may call the routes that need an API key (`api_key = true` in
# api.tf's route table), and how much: one usage plan per stage, with its
# throttle and daily quota, and one API key per consumer and stage, so a
# staging key never opens prod. `cargo xtask apikey CONSUMER --stage S`
# prints a key's value.
#
# These are the stages' settings, as the method throttling below
# api.tf's stages is: `apply` sets them for both stages; they are not part
# of a deployment, so not of the API revision `publish` pins.
locals {
  api_keys = {
    for pair in setproduct(sort(tolist(var.api_key_consumers)), keys(local.deployments)) :
    "${pair[0]}/${pair[1]}" => { consumer = pair[0], stage = pair[1] }
  }
}

resource "aws_api_gateway_usage_plan" "this" {
  for_each = aws_api_gateway_stage.this

  name        = "${var.name}-${each.key}"
  description = "Callers of the ${each.key} stage's key-required routes."

  api_stages {
    api_id = aws_api_gateway_rest_api.this.id
    stage  = each.value.stage_name
  }

  throttle_settings {
    rate_limit  = var.usage_plan.rate_limit
    burst_limit = var.usage_plan.burst_limit
  }

  quota_settings {
    limit  = var.usage_plan.daily_quota
    period = "DAY"
  }
}

resource "aws_api_gateway_api_key" "this" {
  for_each = local.api_keys

  name        = "${var.name}-${each.value.consumer}-${each.value.stage}"
  description = "${each.value.consumer}'s key to the ${each.value.stage} stage."
}

resource "aws_api_gateway_usage_plan_key" "this" {
  for_each = local.api_keys

  key_id        = aws_api_gateway_api_key.this[each.key].id
  key_type      = "API_KEY"
  usage_plan_id = aws_api_gateway_usage_plan.this[each.value.stage].id
}
