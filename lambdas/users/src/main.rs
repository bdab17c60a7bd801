//! The `users` Lambda function: configuration is read once per cold
//! start, the DynamoDB client is made on the first request that needs it
//! ([`api::sdk::Lazy`]), and every invocation goes to `Users::handle`.

use users::Users;
use users::dynamo::DynamoStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    api::init_logging();
    let tables = users::tables_from_env()?;
    let config = api::sdk::config().await;
    let users = Users {
        store: DynamoStore::new(api::sdk::Lazy::new(move || {
            aws_sdk_dynamodb::Client::new(&config)
        })),
        tables,
    };
    api::serve(|request| users.handle(request)).await
}
