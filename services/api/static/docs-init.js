// Renders /openapi.json with the Swagger UI bundle served by kodo itself (no CDN).
// A file, not an inline script: the page's CSP runs only scripts carrying its nonce.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
