"""aggkit-flower-app: Byzantine-robust federated logistic regression with aggkit and Flower."""
