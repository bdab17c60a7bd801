# The REST API. Every route is one entry of `local.routes`; resources,
# methods, integrations and responses are generated from it, so adding a
# route is one line and touches no other route's resources.
locals {
  # "METHOD /resource/path" = { function that serves it, and `api_key =
  # true` where a caller needs an API key of the stage's usage plan
  # (usage.tf) in its `x-api-key` header }.
  routes = {
    "GET /status"        = { function = "status" }
    "GET /health"        = { function = "status" }
    "GET /user/{id}"     = { function = "users" }
    "POST /user/{id}"    = { function = "users" }
    "DELETE /user/{id}"  = { function = "users" }
    "POST /chirps"       = { function = "chirps" }
    "GET /chirps"        = { function = "chirps" }
    "GET /chirps/count"  = { function = "chirps" }
    "POST /files"        = { function = "files", api_key = true }
    "GET /files/{id}"    = { function = "files", api_key = true }
    "DELETE /files/{id}" = { function = "files", api_key = true }
  }

  # The statuses functions answer with as "<status>: <json>" errors
  # (lambdas/api: ApiError). The integration response selects the status by
  # that prefix and passes the JSON after it through unchanged.
  error_statuses = ["400", "403", "404", "409", "500"]

  # Any other error (a timeout, a crash, a runtime error) is a 502 with a
  # fixed body: without this catch-all it would fall to the default (200).
  # Mutually exclusive with the prefixed patterns, so the order never matters.
  unmatched_error_pattern = "(?!(?:${join("|", local.error_statuses)}): )[\\s\\S]+"
  unmatched_error_body    = "{\"message\": \"the function failed without an API error: see its logs\", \"request_id\": \"$context.requestId\"}"

  responses = merge(
    { "200" = { pattern = null, templates = null } },
    { for status in local.error_statuses : status => {
      pattern   = "${status}: .*"
      templates = { "application/json" = "$input.path('$.errorMessage').substring(5)" }
    } },
    { "502" = { pattern = local.unmatched_error_pattern, templates = { "application/json" = local.unmatched_error_body } } },
  )

  # The one request template every integration uses; the functions parse it
  # as `api::Envelope`.
  request_template = file("${path.module}/templates/request.vtl")

  route = {
    for key, route in local.routes : key => {
      method   = split(" ", key)[0]
      path     = split(" ", key)[1]
      function = route.function
      api_key  = try(route.api_key, false)
    }
  }

  # Every resource path the routes need ("/user" and "/user/{id}" for
  # "/user/{id}"), by depth: a resource's parent is one level up.
  paths = toset(flatten([
    for route in local.route : [
      for depth in range(1, length(split("/", route.path))) :
      join("/", slice(split("/", route.path), 0, depth + 1))
    ]
  ]))
  paths_at = {
    for depth in [1, 2, 3] : depth => {
      for path in local.paths : path => {
        parent = join("/", slice(split("/", path), 0, depth))
        part   = element(split("/", path), depth)
      } if length(split("/", path)) == depth + 1
    }
  }
  resource_ids = merge(
    { "" = aws_api_gateway_rest_api.this.root_resource_id },
    { for path, resource in aws_api_gateway_resource.depth1 : path => resource.id },
    { for path, resource in aws_api_gateway_resource.depth2 : path => resource.id },
    { for path, resource in aws_api_gateway_resource.depth3 : path => resource.id },
  )

  # One entry per route and response status: "GET /user/{id} 404".
  route_responses = merge([
    for key, route in local.route : {
      for status, response in local.responses : "${key} ${status}" => merge(response, {
        route  = key
        status = status
      })
    }
  ]...)

  # Every argument of the API's resources, methods and integrations (the
  # resources below take each one from here; a tidy test keeps them from
  # setting any other), so the revision covers all of it.
  api = {
    region         = var.region
    name           = var.name
    description    = "Rust Lambda functions behind staging and prod stages."
    endpoint_types = ["REGIONAL"]
  }
  method = {
    authorization = "NONE"
  }
  integration = {
    type                    = "AWS"
    integration_http_method = "POST"
    # `%s` is the function's ARN: the stage variable `stage` picks its alias
    # of the same name.
    uri                  = "%s:$${stageVariables.stage}/invocations"
    request_templates    = { "application/json" = local.request_template }
    passthrough_behavior = "NEVER"
    timeout_milliseconds = 29000
  }
  methods = { for key, route in local.route : key => merge(local.method, {
    path             = route.path
    method           = route.method
    api_key_required = route.api_key
  }) }
  integrations = { for key, route in local.route : key => merge(local.integration, {
    function      = route.function
    function_name = local.function_names[route.function]
  }) }

  # What a deployment snapshots: every input above, from the configuration
  # (never from attributes read back). Staging redeploys when this changes;
  # it is the API revision a verify receipt records and `publish` pins for
  # prod.
  api_revision = sha256(jsonencode({
    api          = local.api
    paths        = local.paths
    methods      = local.methods
    integrations = local.integrations
    responses    = local.route_responses
  }))
}

resource "aws_api_gateway_rest_api" "this" {
  #checkov:skip=CKV_AWS_237:never replaced (name, description and endpoint types update in place); the replaced deployments already create before destroy
  name        = local.api.name
  description = local.api.description

  endpoint_configuration {
    types = local.api.endpoint_types
  }

  lifecycle {
    precondition {
      condition     = alltrue([for path in local.paths : length(split("/", path)) <= 4])
      error_message = "A route is deeper than three path segments: add a depth4 resource level to api.tf."
    }
  }
}

resource "aws_api_gateway_resource" "depth1" {
  for_each = local.paths_at[1]

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_rest_api.this.root_resource_id
  path_part   = each.value.part
}

resource "aws_api_gateway_resource" "depth2" {
  for_each = local.paths_at[2]

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.depth1[each.value.parent].id
  path_part   = each.value.part
}

resource "aws_api_gateway_resource" "depth3" {
  for_each = local.paths_at[3]

  rest_api_id = aws_api_gateway_rest_api.this.id
  parent_id   = aws_api_gateway_resource.depth2[each.value.parent].id
  path_part   = each.value.part
}

resource "aws_api_gateway_method" "this" {
  #checkov:skip=CKV2_AWS_53:each function validates its own request (api::Envelope, then a 400 saying what is wrong); a validator would answer with API Gateway's own 400
  for_each = local.methods

  rest_api_id      = aws_api_gateway_rest_api.this.id
  resource_id      = local.resource_ids[each.value.path]
  http_method      = each.value.method
  authorization    = each.value.authorization
  api_key_required = each.value.api_key_required
}

resource "aws_api_gateway_integration" "this" {
  for_each = local.integrations

  rest_api_id             = aws_api_gateway_rest_api.this.id
  resource_id             = aws_api_gateway_method.this[each.key].resource_id
  http_method             = aws_api_gateway_method.this[each.key].http_method
  type                    = each.value.type
  integration_http_method = each.value.integration_http_method
  uri                     = format(each.value.uri, trimsuffix(aws_lambda_function.this[each.value.function].invoke_arn, "/invocations"))
  request_templates       = each.value.request_templates
  passthrough_behavior    = each.value.passthrough_behavior
  timeout_milliseconds    = each.value.timeout_milliseconds
}

resource "aws_api_gateway_method_response" "this" {
  for_each = local.route_responses

  rest_api_id = aws_api_gateway_rest_api.this.id
  resource_id = aws_api_gateway_method.this[each.value.route].resource_id
  http_method = aws_api_gateway_method.this[each.value.route].http_method
  status_code = each.value.status
}

resource "aws_api_gateway_integration_response" "this" {
  for_each = local.route_responses

  rest_api_id        = aws_api_gateway_rest_api.this.id
  resource_id        = aws_api_gateway_integration.this[each.value.route].resource_id
  http_method        = aws_api_gateway_integration.this[each.value.route].http_method
  status_code        = aws_api_gateway_method_response.this[each.key].status_code
  selection_pattern  = each.value.pattern
  response_templates = each.value.templates
}

# A deployment is a snapshot of the API. Staging's follows the configuration;
# prod's is taken only when the pinned revision changes (`cargo xtask publish`
# pins the revision staging was verified at).
resource "aws_api_gateway_deployment" "staging" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  description = "staging at API revision ${local.api_revision}"

  triggers = {
    revision = local.api_revision
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [aws_api_gateway_method.this, aws_api_gateway_integration.this, aws_api_gateway_method_response.this, aws_api_gateway_integration_response.this]
}

resource "aws_api_gateway_deployment" "prod" {
  rest_api_id = aws_api_gateway_rest_api.this.id
  description = "prod at API revision ${var.prod_release.api_revision}"

  triggers = {
    revision = var.prod_release.api_revision
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [aws_api_gateway_method.this, aws_api_gateway_integration.this, aws_api_gateway_method_response.this, aws_api_gateway_integration_response.this]
}

locals {
  deployments = {
    staging = aws_api_gateway_deployment.staging.id
    prod    = aws_api_gateway_deployment.prod.id
  }
}

resource "aws_api_gateway_stage" "this" {
  #checkov:skip=CKV2_AWS_4:execution logging is set: aws_api_gateway_method_settings.this gives each stage var.execution_logging_level (ERROR by default), a link checkov's graph does not follow through for_each
  #checkov:skip=CKV2_AWS_29:no WAF yet: stage throttling and the usage plans bound callers; a web ACL is a per-request cost decision
  #checkov:skip=CKV2_AWS_51:client certificates authenticate API Gateway to HTTP backends; these integrations are IAM-signed Lambda calls
  #checkov:skip=CKV_AWS_120:no cache: responses must be current (a 409 names the stored lock_version), and a cache bills per hour
  for_each = local.deployments

  rest_api_id   = aws_api_gateway_rest_api.this.id
  stage_name    = each.key
  deployment_id = each.value

  variables = {
    stage = each.key
  }

  # Stage settings, not part of a deployment (nor of the API revision):
  # `apply` changes them on both stages; a promotion refuses while such a
  # change is pending.
  xray_tracing_enabled = var.tracing

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.access[each.key].arn
    format          = local.access_log_format
  }

  # API Gateway writes logs with the account's CloudWatch role (logs.tf).
  depends_on = [aws_api_gateway_account.this]
}

resource "aws_api_gateway_method_settings" "this" {
  #checkov:skip=CKV_AWS_225:no cache: responses must be current (a 409 names the stored lock_version), and a cache bills per hour
  for_each = aws_api_gateway_stage.this

  rest_api_id = aws_api_gateway_rest_api.this.id
  stage_name  = each.value.stage_name
  method_path = "*/*"

  settings {
    throttling_rate_limit  = var.throttling_rate_limit
    throttling_burst_limit = var.throttling_burst_limit
    logging_level          = var.execution_logging_level
    metrics_enabled        = false
  }

  depends_on = [aws_api_gateway_account.this]
}
