// Progressive enhancement only: every page works without this file (and without htmx).
// When an htmx-enhanced GET (a filter, a search) gets an error answer, htmx would leave the old results
// on screen; load the same address as a normal page instead, so the error message is shown.
document.addEventListener("htmx:responseError", function (event) {
  var detail = event.detail;
  if (detail.requestConfig && detail.requestConfig.verb === "get" && detail.xhr.responseURL) {
    window.location.assign(detail.xhr.responseURL);
  }
});
